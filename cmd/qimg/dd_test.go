package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qimg dd against qemu-img dd: the same operands give the same exit
// code, the same messages and the same output (bytes for raw; contents,
// size and allocation for qcow2).
func TestDD_LikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	in := qemuImage(t, filepath.Join(dir, "in.qcow2"), "qcow2", "1M",
		"write -P 7 0 256k", "write -P 9 512k 4k", "write -P 3 1020k 4k")
	cases := [][]string{
		{},
		{"bs=4k", "count=10", "skip=3"},
		{"bs=64k", "skip=4", "-O", "qcow2"},
		{"bs=64k", "count=3", "-O", "qcow2"},
		{"bs=4k", "skip=1000"},
		{"bs=3", "count=5000", "skip=7"},
		{"bs=1k", "count=0"},
		{"bs=1M", "-f", "raw"},
		{"bs=100k", "count=7", "skip=2"},
		{"bs=1k", "skip=1k"},
		{"bs=0"},
		{"bs=abc"},
		{"bs=4G"},
		{"count=-1"},
		{"skip=x"},
		{"bs"},
		{"foo=3"},
		{"NOIN"},
	}
	for i, c := range cases {
		t.Run(strings.Join(c, " "), func(t *testing.T) {
			outs := [2]string{filepath.Join(dir, "q.out"), filepath.Join(dir, "o.out")}
			args := func(k int) []string {
				a := []string{"dd"}
				noIn := false
				for _, s := range c {
					if s == "NOIN" {
						noIn = true
						continue
					}
					a = append(a, s)
				}
				if !noIn {
					a = append(a, "if="+in)
				}
				return append(a, "of="+outs[k])
			}
			for _, p := range outs {
				os.Remove(p)
			}
			_, qerr, qcode := testkit.Run(t, "qemu-img", args(0)...)
			_, oerr, ocode := runQ(t, args(1)...)
			norm := func(s, prefix, out string) string {
				s = strings.ReplaceAll(s, prefix, "")
				return strings.ReplaceAll(s, out, "OUT")
			}
			if qm, om := norm(qerr, "qemu-img: ", outs[0]), norm(oerr, "qimg: dd: ", outs[1]); qcode != ocode || qm != om {
				t.Fatalf("case %d: qemu-img exit %d %q, qimg exit %d %q", i, qcode, qm, ocode, om)
			}
			if qcode != 0 {
				return
			}
			if strings.Contains(strings.Join(c, " "), "qcow2") {
				testkit.QemuCheck(t, outs[1])
				testkit.MustRun(t, "qemu-img", "compare", "-s", outs[0], outs[1])
				size := func(p string) string {
					info := testkit.MustRun(t, "qemu-img", "info", p)
					_, v, _ := strings.Cut(info, "virtual size:")
					v, _, _ = strings.Cut(v, "\n")
					return v
				}
				if a, b := size(outs[0]), size(outs[1]); a != b {
					t.Fatalf("virtual size %s, want %s", b, a)
				}
				return
			}
			a, err := os.ReadFile(outs[0])
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(outs[1])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("raw output: %d bytes, qemu-img's %d, first difference at %d", len(b), len(a), testkit.FirstDiff(a, b))
			}
		})
	}
}
