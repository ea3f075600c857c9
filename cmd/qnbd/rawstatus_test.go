package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qring/qring/nbd"
)

// TestRawStatus: SEEK_DATA/SEEK_HOLE on a sparse file give data and
// holes; ENXIO (no data up to the end of the file) is a hole reading as
// zeros; any other lseek failure tells nothing, so the range is data
// (file-posix's find_allocation: only ENXIO is a trailing hole).
func TestRawStatus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const mb = 1 << 20
	if err := f.Truncate(8 * mb); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, mb), 2*mb); err != nil { // allocated, zero bytes
		t.Fatal(err)
	}
	f.Sync()
	rs := rawStatus{int(f.Fd())}
	hole := nbd.Extent{Hole: true, Zero: true, Depth: 1}
	for _, tc := range []struct {
		off, n int64
		want   nbd.Extent
		len    int64
	}{
		{0, 8 * mb, hole, 2 * mb},                  // leading hole up to the data
		{2 * mb, 6 * mb, nbd.Extent{Depth: 1}, mb}, // data up to the hole
		{2*mb + 5, 100, nbd.Extent{Depth: 1}, 100}, // inside data, clamped
		{3 * mb, 5 * mb, hole, 5 * mb},             // trailing hole: ENXIO
		{mb, mb / 2, hole, mb / 2},                 // data past the range
	} {
		e, err := rs.Extent(tc.off, tc.n)
		tc.want.Len = tc.len
		if err != nil || e != tc.want {
			if tc.off == 0 && err == nil && e == (nbd.Extent{Len: 8 * mb, Depth: 1}) {
				t.Skip("the file system reports no holes")
			}
			t.Errorf("Extent(%d, %d) = %+v, %v; want %+v", tc.off, tc.n, e, err, tc.want)
		}
	}

	// A descriptor lseek cannot serve (ESPIPE here; EIO or ESTALE on a
	// network file system): data, not a hole.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := syscall.Seek(int(r.Fd()), 0, seekData); err != syscall.ESPIPE {
		t.Fatalf("lseek on a pipe: %v", err)
	}
	if e, err := (rawStatus{int(r.Fd())}).Extent(4096, mb); err != nil || e != (nbd.Extent{Len: mb, Depth: 1}) {
		t.Errorf("Extent on a pipe = %+v, %v; want data", e, err)
	}
}
