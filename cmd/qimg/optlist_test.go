package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestOptionList_LikeQemu: create and convert refuse the -o lists
// qemu-img refuses (empty, a leading comma, an odd run of trailing
// commas) before touching the output, and a size given both as an
// argument and in -o; qimg went ahead, over an existing file. Sizes
// with a leading 0 are decimal (create made 8-byte images of "010").
func TestOptionList_LikeQemu(t *testing.T) {
	d := qemuDir(t)
	src := filepath.Join(d, "src.raw")
	if err := os.WriteFile(src, bytes.Repeat([]byte{7}, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0x3c}, 4096)
	for _, c := range [][]string{
		{"create", "-f", "qcow2", "-o", "", "OUT", "1M"},
		{"create", "-f", "qcow2", "-o", ",", "OUT", "1M"},
		{"create", "-f", "qcow2", "-o", ",cluster_size=4k", "OUT", "1M"},
		{"create", "-f", "qcow2", "-o", "cluster_size=4k,", "OUT", "1M"},
		{"create", "-f", "qcow2", "-o", "cluster_size=4k,,,", "OUT", "1M"},
		{"create", "-f", "qcow2", "-o", " cluster_size=4k", "OUT", "1M"},
		{"create", "-f", "qcow2", "-o", "size=2M", "OUT", "1M"},
		{"create", "-f", "raw", "-o", "size=2M", "OUT", "1M"},
		{"create", "-f", "raw", "OUT", "0100000"},
		{"convert", "-f", "raw", "-O", "qcow2", "-o", "", src, "OUT"},
		{"convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1,", src, "OUT"},
		{"measure", "-O", "qcow2", "-o", "", "--size", "1M"},
	} {
		var outs [2][]byte
		var codes [2]int
		var errs [2]string
		for i, tool := range []string{"qimg", "qemu-img"} {
			out := filepath.Join(d, tool+".out")
			if err := os.WriteFile(out, old, 0o644); err != nil {
				t.Fatal(err)
			}
			args := make([]string, len(c))
			for k, a := range c {
				if a == "OUT" {
					a = out
				}
				args[k] = a
			}
			if tool == "qimg" {
				_, e, code := runQ(t, args...)
				codes[i], errs[i] = code, firstWords(strings.ReplaceAll(e, out+": ", ""), "qimg: "+c[0]+": ")
			} else {
				_, e, code := testkit.Run(t, "qemu-img", args...)
				codes[i], errs[i] = code, firstWords(strings.ReplaceAll(e, out+": ", ""), "qemu-img: ")
			}
			outs[i], _ = os.ReadFile(out)
			os.Remove(out)
		}
		if codes[0] != codes[1] || errs[0] != errs[1] {
			t.Errorf("%q: qimg exit %d %q; qemu-img exit %d %q", c, codes[0], errs[0], codes[1], errs[1])
		}
		if codes[1] != 0 && !bytes.Equal(outs[0], old) {
			t.Errorf("%q: refused, yet qimg changed the output", c)
		}
		if c[1] == "-f" && c[2] == "raw" && len(outs[0]) != len(outs[1]) {
			t.Errorf("%q: qimg made %d bytes, qemu-img %d", c, len(outs[0]), len(outs[1]))
		}
	}
}
