package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// TestCreate_FileTooLargeMatchesQemu: a size the file system cannot hold
// in one file (17 TiB on ext4 with 4 KiB blocks: EFBIG) is the format's
// limit in qemu-img's words ("The image size is too large for file
// format 'raw'"), for every preallocation: qimg said its truncate's
// errno. Output, exit code and what is left on disk as qemu-img's.
func TestCreate_FileTooLargeMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := looptest.Ext4Dir(t, 64<<20)
	state := func(p string) string {
		st, err := os.Stat(p)
		if err != nil {
			return "absent"
		}
		if st.Size() == 0 {
			return "an empty file"
		}
		return "a file"
	}
	for _, c := range [][]string{
		{"-f", "raw"}, {"-f", "raw", "-o", "preallocation=falloc"}, {"-f", "raw", "-o", "preallocation=full"},
		{"-f", "vpc"}, {"-f", "qcow2"}, {"-f", "qcow2", "-o", "cluster_size=2M"},
	} {
		ours, theirs := filepath.Join(d, "q.img"), filepath.Join(d, "e.img")
		args := append([]string{"create"}, c...)
		out, errOut, code := runQ(t, append(args, ours, "17T")...)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", append(args, theirs, "17T")...)
		qout = strings.ReplaceAll(qout, theirs, ours)
		qerr = strings.ReplaceAll(strings.ReplaceAll(qerr, theirs, ours), "qemu-img: ", "")
		errOut = strings.ReplaceAll(errOut, "qimg: create: ", "")
		if out != qout || code != qcode || errOut != qerr {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", c, code, out, errOut, qcode, qout, qerr)
		}
		if got, want := state(ours), state(theirs); got != want {
			t.Errorf("%q: qimg left %s, qemu-img %s", c, got, want)
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// TestCreate_PreallocTooLargeFailsAtOnce: a qcow2 image whose
// preallocation (falloc or full, in the image file or a data file) the
// file system cannot hold in one file fails at once with qemu-img's
// "too large" words (as qemu-img create on a file system with room for
// the metadata), leaving the file system's free space as it was: the
// falloc preallocation fell back to writing zeros on any error, so an
// EFBIG wrote the whole disk full first (60 GB here) and then named a
// write's ENOSPC.
func TestCreate_PreallocTooLargeFailsAtOnce(t *testing.T) {
	d := looptest.Ext4Dir(t, 128<<20)
	free := func() uint64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err != nil {
			t.Fatal(err)
		}
		return st.Bavail * uint64(st.Bsize)
	}
	before := free()
	img := filepath.Join(d, "q.qcow2")
	for _, o := range []string{"preallocation=falloc", "preallocation=full",
		"preallocation=falloc,data_file=" + img + ".data", "preallocation=full,data_file=" + img + ".data"} {
		_, errOut, code := runQ(t, "create", "-q", "-f", "qcow2", "-o", o, img, "17T")
		want := "qimg: create: " + img + ": The image size is too large for file format 'qcow2' (try using a larger cluster size)\n"
		if code != 1 || errOut != want {
			t.Errorf("-o %s: exit %d, %q; want 1, %q", o, code, errOut, want)
		}
		if now := free(); now+1<<20 < before {
			t.Errorf("-o %s: the file system lost %d bytes of free space", o, before-now)
		}
		os.Remove(img)
		os.Remove(img + ".data")
	}
}
