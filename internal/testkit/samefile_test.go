package testkit

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFileDiff: sparse files compare by content, holes as zeros: a byte
// in one file's data against the other's hole, written zeros against a
// hole, different lengths.
func TestFileDiff(t *testing.T) {
	d := t.TempDir()
	mk := func(name string, size int64, writes map[int64][]byte) string {
		p := filepath.Join(d, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for off, b := range writes {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	const big = 64 << 20
	zeros := make([]byte, 1<<20)
	a := mk("a", big, map[int64][]byte{4096: []byte("abc"), 40 << 20: []byte("x")})
	same := mk("same", big, map[int64][]byte{4096: []byte("abc"), 40 << 20: []byte("x"), 10 << 20: zeros})
	other := mk("other", big, map[int64][]byte{4096: []byte("abc"), 40 << 20: []byte("x"), 50<<20 + 7: []byte("y")})
	short := mk("short", 40<<20+1, map[int64][]byte{4096: []byte("abc"), 40 << 20: []byte("x")})
	early := mk("early", big, map[int64][]byte{4096: []byte("abd"), 40 << 20: []byte("x")})
	for _, c := range []struct {
		x, y string
		want int64
	}{
		{a, same, -1}, {same, a, -1}, {a, other, 50<<20 + 7}, {other, a, 50<<20 + 7},
		{a, short, 40<<20 + 1}, {short, a, 40<<20 + 1}, {a, early, 4098},
	} {
		got, err := FileDiff(c.x, c.y)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("FileDiff(%s, %s) = %d, want %d", filepath.Base(c.x), filepath.Base(c.y), got, c.want)
		}
	}
}
