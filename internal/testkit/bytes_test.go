package testkit

import (
	"strings"
	"testing"
)

func TestFirstDiff(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", -1}, {"abc", "abc", -1}, {"abc", "abd", 2}, {"ab", "abc", 2}, {"abc", "a", 1}, {"xbc", "abc", 0},
	} {
		if got := FirstDiff([]byte(tc.a), []byte(tc.b)); got != tc.want {
			t.Errorf("FirstDiff(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	// Past the first chunk, at chunk edges, and a prefix longer than one.
	const chunk = 64 << 10
	a := make([]byte, 3*chunk+5)
	for _, i := range []int{0, chunk - 1, chunk, 2*chunk + 17, len(a) - 1} {
		b := append([]byte(nil), a...)
		b[i] = 1
		if got := FirstDiff(a, b); got != i {
			t.Errorf("difference at %d: FirstDiff = %d", i, got)
		}
		b[len(b)-1] = 2
		if got := FirstDiff(a, b); got != i {
			t.Errorf("differences at %d and the end: FirstDiff = %d", i, got)
		}
	}
	if got := FirstDiff(a, a[:2*chunk+3]); got != 2*chunk+3 {
		t.Errorf("proper prefix of %d bytes: FirstDiff = %d", 2*chunk+3, got)
	}
	if got := FirstDiff(a, append([]byte(nil), a...)); got != -1 {
		t.Errorf("equal: FirstDiff = %d", got)
	}
}

func TestMustEqual_Message(t *testing.T) {
	f := newFakeT(t, "TestX")
	f.run(func(f *fakeT) { MustEqual(f, []byte("abcX"), []byte("abcY!"), "read back") })
	want := "read back: first difference at offset 3 (0x3): got 0x58 want 0x59 (len 4 vs 5)"
	if len(f.errs) != 1 || !strings.Contains(f.errs[0], want) {
		t.Errorf("errors %q, want %q", f.errs, want)
	}
	f = newFakeT(t, "TestX")
	f.run(func(f *fakeT) { MustEqual(f, []byte("same"), []byte("same"), "x") })
	if f.failed {
		t.Errorf("equal slices failed: %q", f.errs)
	}
}

type sliceDev []byte

func (d sliceDev) Size() (int64, error) { return int64(len(d)), nil }
func (d sliceDev) Readv(off int64, bufs [][]byte) error {
	for _, b := range bufs {
		off += int64(copy(b, d[off:]))
	}
	return nil
}

func TestReadAll(t *testing.T) {
	if got := ReadAll(t, sliceDev("device")); string(got) != "device" {
		t.Errorf("ReadAll = %q", got)
	}
}
