package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_CreateRefusalsLikeQemu: convert refuses the output's
// qcow2 create options QEMU's driver refuses, in its words, as create
// does (convert said "qcow2: unsupported feature: ..." in the
// engine's); and a backing file with preallocation wants extended L2
// entries, in QEMU's words for both commands.
func TestConvert_CreateRefusalsLikeQemu(t *testing.T) {
	d := qemuDir(t)
	src := qemuImage(t, filepath.Join(d, "src.raw"), "raw", "1M", "write -P 7 0 64k")
	base := qemuImage(t, filepath.Join(d, "b.qcow2"), "qcow2", "1M")
	for _, c := range []string{
		"-o cluster_size=1000", "-o cluster_size=0", "-o refcount_bits=0",
		"-o compat=0.10,extended_l2=on", "-o compat=0.10,refcount_bits=1",
		"-o compression_type=zstd,compat=0.10", "-o compat=0.10,lazy_refcounts=on",
		"-o extended_l2=on,cluster_size=4k",
		"-o preallocation=falloc -B @B -F qcow2", "-o preallocation=metadata -B @B -F qcow2",
		"-o preallocation=full,extended_l2=on -B @B -F qcow2",
	} {
		for _, cmd := range []string{"convert", "create"} {
			args := []string{cmd, "-q", "-O", "qcow2"}
			if cmd == "create" {
				args = []string{cmd, "-q", "-f", "qcow2"}
			}
			for _, a := range strings.Fields(c) {
				if cmd == "create" && a == "-B" {
					a = "-b"
				}
				args = append(args, strings.ReplaceAll(a, "@B", base))
			}
			if cmd == "convert" {
				args = append(args, src)
			}
			q, g := filepath.Join(d, "q.qcow2"), filepath.Join(d, "g.qcow2")
			tail := []string{}
			if cmd == "create" {
				tail = []string{"1M"}
			}
			qo, qe, qcode := testkit.Run(t, "qemu-img", append(append(append([]string(nil), args...), q), tail...)...)
			o, e, code := runQ(t, append(append(append([]string(nil), args...), g), tail...)...)
			if code != qcode || o != qo || strings.ReplaceAll(asQemu(e), "g.qcow2", "q.qcow2") != qe {
				t.Errorf("%s %s: exit %d, qemu-img %d\nqimg: %s%s\nqemu-img: %s%s", cmd, c, code, qcode, o, e, qo, qe)
			}
			os.Remove(q)
			os.Remove(g)
		}
	}
}
