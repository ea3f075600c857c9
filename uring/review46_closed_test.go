//go:build linux

package uring

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
)

// TestReview46_ClosedChecksNothingFirst (B7, U5): after Close every
// method returns os.ErrClosed, before any other check: a read-only File
// does not say ErrReadOnly, and a block device does not look for its
// size, which would lseek a descriptor number the process may have
// given to another file since (moving that file's offset).
func TestReview46_ClosedChecksNothingFirst(t *testing.T) {
	t.Run("read-only", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "img")
		if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path, Options{Backend: Ring, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4096)
		for name, err := range map[string]error{
			"Writev":           block.WriteAt(f, b, 0),
			"WriteZeroes":      f.WriteZeroes(0, 4096, 0),
			"Truncate":         f.Truncate(4096),
			"ZeroThenWritev":   f.ZeroThenWritev(0, 4096, 0, 0, [][]byte{b}),
			"Readv(bad range)": f.Readv(-1, [][]byte{b}),
			"DataRun(bad range)": func() error {
				_, _, err := f.DataRun(-1, 4096)
				return err
			}(),
		} {
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("%s after Close = %v, want os.ErrClosed (B7)", name, err)
			}
		}
	})
	t.Run("block-device", func(t *testing.T) {
		const size = 1 << 20
		dev := looptest.LoopDevice(t, size, 4<<20)
		f, err := Open(dev, Options{Backend: Ring})
		if err != nil {
			t.Fatal(err)
		}
		fd := f.Fd()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// The next open takes the lowest free number: the File's.
		other, err := os.Create(filepath.Join(t.TempDir(), "other"))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if int(other.Fd()) != fd {
			t.Skipf("the File's descriptor %d went to nobody (next open got %d)", fd, other.Fd())
		}
		if _, err := other.Write(make([]byte, 3*size)); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Seek(100, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4096)
		for name, err := range map[string]error{
			"Writev(past)":         block.WriteAt(f, b, 2*size),
			"WriteZeroes(past)":    f.WriteZeroes(2*size, 4096, 0),
			"ZeroThenWritev(past)": f.ZeroThenWritev(2*size, 4096, block.Allocate, 0, [][]byte{b}),
		} {
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("%s after Close = %v, want os.ErrClosed (B7)", name, err)
			}
		}
		if pos, err := other.Seek(0, io.SeekCurrent); err != nil || pos != 100 {
			t.Errorf("a closed File moved the offset of the file that now has its descriptor: %d, %v (want 100)", pos, err)
		}
	})
}
