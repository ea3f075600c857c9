package filter

import (
	"bytes"
	"testing"

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
