package testkit

import (
	"bytes"
	"testing"
)

// Reader is the part of a block device ReadAll needs (block.Device has
// it; testkit does not import block, so block's own tests may use it).
type Reader interface {
	Size() (int64, error)
	Readv(off int64, bufs [][]byte) error
}

// ReadAll reads the whole device; an error fails t.
func ReadAll(t testing.TB, d Reader) []byte {
	t.Helper()
	n, err := d.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if err := d.Readv(0, [][]byte{b}); err != nil {
		t.Fatal(err)
	}
	return b
}

// FirstDiff returns the first offset where a and b differ, min(len(a),
// len(b)) when one is a proper prefix of the other, or -1 when they are
// equal. It compares 64 KiB chunks with bytes.Equal and looks at single
// bytes only in the first chunk that differs: a byte loop over whole
// images costs two race-detector calls per byte, which made comparing
// 64 MiB images most of some tests' time under -race.
func FirstDiff(a, b []byte) int {
	const chunk = 64 << 10
	n := min(len(a), len(b))
	for off := 0; off < n; off += chunk {
		end := min(off+chunk, n)
		if bytes.Equal(a[off:end], b[off:end]) {
			continue
		}
		for i := off; i < end; i++ {
			if a[i] != b[i] {
				return i
			}
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}

// MustEqual fails t unless got equals want, naming what was compared,
// the first offset that differs and the bytes there.
func MustEqual(t testing.TB, got, want []byte, what string) {
	t.Helper()
	if i := FirstDiff(got, want); i >= 0 {
		g, w := byte(0), byte(0)
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		t.Fatalf("%s: first difference at offset %d (0x%x): got %#x want %#x (len %d vs %d)", what, i, i, g, w, len(got), len(want))
	}
}
