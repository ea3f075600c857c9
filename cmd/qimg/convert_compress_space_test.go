package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_CompressedSpaceLikeQemu: a compressed output takes about
// the space qemu-img's takes on disk: the engine reserves no space ahead
// for it (its compressed clusters fill a part of a host cluster each,
// and with refcount_bits=1 one host cluster each: the space reserved
// around them stayed allocated, 9.7 MiB for qemu-img's 1 MiB).
func TestConvert_CompressedSpaceLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x61 0 8M", "-c", "write -P 0x62 20M 4M", src)
	used := func(p string) int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	for _, o := range []string{"refcount_bits=1", "cluster_size=2M", "cluster_size=64k"} {
		theirs, ours := filepath.Join(d, "theirs.qcow2"), filepath.Join(d, "ours.qcow2")
		os.Remove(theirs)
		os.Remove(ours)
		testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", o, src, theirs)
		if _, e, code := runQ(t, "convert", "-c", "-O", "qcow2", "-o", o, src, ours); code != 0 {
			t.Fatalf("%s: exit %d: %s", o, code, e)
		}
		testkit.QemuCheck(t, ours)
		testkit.MustRun(t, "qemu-img", "compare", "-q", src, ours)
		if q, u := used(theirs), used(ours); u > q+q/10+64<<10 {
			t.Errorf("%s: %d KiB on disk, qemu-img's %d KiB", o, u>>10, q>>10)
		}
	}
}
