package block

import (
	"bytes"
	"errors"
	"testing"
)

// TestCursor: pieces of every size, across buffer boundaries and empty
// buffers, join back into the vector.
func TestCursor(t *testing.T) {
	bufs := [][]byte{[]byte("abc"), nil, []byte("defgh"), []byte("i")}
	for _, sizes := range [][]int64{{9}, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {2, 4, 3}, {3, 6}} {
		var c Cursor
		var got []byte
		for _, n := range sizes {
			piece := c.Next(bufs, n)
			if VecLen(piece) != n {
				t.Fatalf("%v: a piece of %d bytes for %d", sizes, VecLen(piece), n)
			}
			got = append(got, bytes.Join(piece, nil)...)
		}
		if string(got) != "abcdefghi" {
			t.Errorf("%v: %q", sizes, got)
		}
	}
	if !errors.Is(ErrNoResize, ErrNotSupported) || ErrNoResize.Error() != "Image format driver does not support resize" {
		t.Errorf("ErrNoResize: %v", ErrNoResize)
	}
}
