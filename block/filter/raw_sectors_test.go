package filter

import (
	"bytes"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// TestRaw_SectorsRoundsTheWindowToo: with Sectors, a window at an offset
// that is not a multiple of 512 without a size is as long as QEMU's: the
// file's length in sectors, less the offset, in sectors again (qemu-nbd
// exported 1000448 bytes of a 1000100-byte file at offset 100 where qnbd
// exported 1000348), and the bytes past the file read as zeros.
func TestRaw_SectorsRoundsTheWindowToo(t *testing.T) {
	for _, c := range []struct{ file, off, want int64 }{
		{1000100, 100, 1000448},
		{3 << 20, 1000000, 2145792},
		{4096, 512, 3584},
		{4096, 5000, 0},
	} {
		m := memdev.New(memdev.Options{})
		if err := m.Truncate(c.file); err != nil {
			t.Fatal(err)
		}
		if err := m.Writev(0, [][]byte{bytes.Repeat([]byte{7}, int(c.file))}); err != nil {
			t.Fatal(err)
		}
		r, err := NewRaw(m, RawOptions{Offset: c.off, Sectors: true})
		if err != nil {
			t.Fatal(err)
		}
		n, err := r.Size()
		if err != nil || n != c.want {
			t.Errorf("file %d at offset %d: size %d, %v; want %d (QEMU's)", c.file, c.off, n, err, c.want)
		}
		if n > 0 {
			tail := make([]byte, n-(c.file-c.off))
			if err := r.Readv(c.file-c.off, [][]byte{tail}); err != nil || !bytes.Equal(tail, make([]byte, len(tail))) {
				t.Errorf("file %d at offset %d: the bytes past the file: %v, zeros %v", c.file, c.off, err, bytes.Equal(tail, make([]byte, len(tail))))
			}
		}
	}
}

// TestRaw_SectorsZeroTailKeepsLength: zeroing that may unmap the sector
// tail past an odd-sized file leaves the file's length, as QEMU's
// PUNCH_HOLE|KEEP_SIZE (qnbd grew a 1000-byte file to 1024 bytes on an
// NBD WRITE_ZEROES of its last sector); without MayUnmap the zeroing
// writes the tail and grows the file, as QEMU's ZERO_RANGE.
func TestRaw_SectorsZeroTailKeepsLength(t *testing.T) {
	for _, c := range []struct {
		file, off    int64
		zoff, zn     int64
		flags        block.Flags
		wantFileSize int64
	}{
		{1000, 0, 512, 512, block.MayUnmap, 1000},
		{1000, 0, 0, 1024, block.MayUnmap, 1000},
		{1000, 0, 1000, 24, block.MayUnmap, 1000},
		{1000, 0, 512, 512, 0, 1024},
		{1000100, 100, 1000448 - 512, 512, block.MayUnmap, 1000100},
	} {
		m := memdev.New(memdev.Options{ZeroFlags: block.MayUnmap})
		if err := m.Writev(0, [][]byte{bytes.Repeat([]byte{7}, int(c.file))}); err != nil {
			t.Fatal(err)
		}
		r, err := NewRaw(m, RawOptions{Offset: c.off, Sectors: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.WriteZeroes(c.zoff, c.zn, c.flags); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if n, _ := m.Size(); n != c.wantFileSize {
			t.Errorf("%+v: file size %d, want %d", c, n, c.wantFileSize)
		}
		got := make([]byte, c.zn)
		if err := r.Readv(c.zoff, [][]byte{got}); err != nil || !bytes.Equal(got, make([]byte, c.zn)) {
			t.Errorf("%+v: zeroed range reads %v, zeros %v", c, err, bytes.Equal(got, make([]byte, c.zn)))
		}
		head := make([]byte, c.zoff)
		if err := r.Readv(0, [][]byte{head}); err != nil || !bytes.Equal(head, bytes.Repeat([]byte{7}, int(c.zoff))) {
			t.Errorf("%+v: bytes before the zeroed range changed (%v)", c, err)
		}
	}
}
