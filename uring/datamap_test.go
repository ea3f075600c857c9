package uring

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"

	"golang.org/x/sys/unix"
)

// TestDataRun: SEEK_DATA/SEEK_HOLE on a sparse file give data and holes;
// ENXIO (no data up to the end of the file) is a hole reading as zeros;
// any other lseek failure tells nothing, so the range is data
// (file-posix's find_allocation: only ENXIO is a trailing hole).
func TestDataRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse")
	const mb = 1 << 20
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8 * mb); err != nil {
		t.Fatal(err)
	}
	if err := f.Writev(2*mb, [][]byte{make([]byte, mb)}); err != nil { // allocated, zero bytes
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	type run struct {
		data bool
		n    int64
	}
	for _, tc := range []struct {
		off, n int64
		want   run
	}{
		{0, 8 * mb, run{false, 2 * mb}},      // leading hole up to the data
		{2 * mb, 6 * mb, run{true, mb}},      // data up to the hole
		{2*mb + 5, 100, run{true, 100}},      // inside data, clamped
		{3 * mb, 5 * mb, run{false, 5 * mb}}, // trailing hole: ENXIO
		{mb, mb / 2, run{false, mb / 2}},     // data past the range
		{9 * mb, mb, run{false, mb}},         // past the end
	} {
		data, n, err := f.DataRun(tc.off, tc.n)
		if err != nil || (run{data, n}) != tc.want {
			if tc.off == 0 && err == nil && data && n == 8*mb {
				t.Skip("the file system reports no holes")
			}
			t.Errorf("DataRun(%d, %d) = %v, %d, %v; want %+v", tc.off, tc.n, data, n, err, tc.want)
		}
	}
	if a, err := f.AllocatedSize(); err != nil || a < mb || a > 2*mb {
		t.Errorf("AllocatedSize = %d, %v; want about 1 MiB", a, err)
	}

	// A descriptor lseek cannot serve (ESPIPE here; EIO or ESTALE on a
	// network file system): data, not a hole.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := unix.Seek(int(r.Fd()), 0, unix.SEEK_DATA); err != unix.ESPIPE {
		t.Fatalf("lseek on a pipe: %v", err)
	}
	if data, n := block.SeekDataRun(int(r.Fd()), 4096, mb); !data || n != mb {
		t.Errorf("SeekDataRun on a pipe = %v, %d; want data, %d", data, n, mb)
	}
	f.Close()
	if _, _, err := f.DataRun(0, 1); err == nil {
		t.Error("DataRun after Close succeeded")
	}
}
