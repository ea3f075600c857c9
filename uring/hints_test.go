//go:build linux

package uring

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// TestFileHints: on XFS the extent size hint set on an empty file is
// the file's (FS_IOC_FSGETXATTR reads it back), a size that is not a
// multiple of the block is refused with the kernel's EINVAL, and a
// closed file refuses with ErrClosed; SetNoCOW is silent where the file
// system has no such flag.
func TestFileHints(t *testing.T) {
	dir := looptest.XFSDir(t, 300<<20)
	for _, c := range []struct {
		hint uint32
		err  error
	}{{64 << 10, nil}, {1 << 20, nil}, {5000, unix.EINVAL}} {
		f, err := Open(filepath.Join(dir, "h"), Options{Create: true, Direct: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		f.SetNoCOW()
		err = f.SetExtentSizeHint(c.hint)
		if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("hint %d: %v, want %v", c.hint, err, c.err)
		}
		var a fsxattr
		if err := f.xattrIoctl(fsIocFSGetXattr, &a); err != nil {
			t.Fatal(err)
		}
		if c.err == nil && (a.extsize != c.hint || a.xflags&fsXflagExtsize == 0) {
			t.Errorf("hint %d: the file's is %d (xflags %#x)", c.hint, a.extsize, a.xflags)
		}
		f.Close()
		if err := f.SetExtentSizeHint(c.hint); !errors.Is(err, block.ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
		f.SetNoCOW() // nothing, no panic
		unix.Unlink(filepath.Join(dir, "h"))
	}
}
