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
