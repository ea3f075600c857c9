//go:build linux

package uring

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
)

func needRing(t *testing.T) {
	t.Helper()
	if err := ProbeRing().Err; err != nil {
		t.Skipf("no io_uring: %v", err)
	}
}

// withNoFeat runs f with the optional ring features off (R9).
func withNoFeat(t *testing.T, f func()) {
	t.Helper()
	testNoFeat = true
	defer func() { testNoFeat = false }()
	f()
}

// TestRingFeat_Taken: on a kernel that has them (this project's CI runs
// Linux 6.x), a writable File's ring takes all three optional features
// (R9), a read-only one all but the zero buffer; with the test switch a
// ring takes none and still works.
func TestRingFeat_Taken(t *testing.T) {
	needRing(t)
	p := filepath.Join(t.TempDir(), "f")
	f, err := Open(p, Options{Create: true, Backend: Ring})
	if err != nil {
		t.Fatal(err)
	}
	got := f.RingFeatures()
	f.Close()
	if got != "coop-taskrun,fixed-file,fixed-zeros" {
		t.Errorf("features %q, want all three on this kernel", got)
	}
	// Read only: never writes zeros, so the buffer is not registered
	// (it would count against RLIMIT_MEMLOCK for nothing).
	ro, err := Open(p, Options{ReadOnly: true, Backend: Ring})
	if err != nil {
		t.Fatal(err)
	}
	if got := ro.RingFeatures(); got != "coop-taskrun,fixed-file" {
		t.Errorf("read-only features %q, want no fixed-zeros", got)
	}
	ro.Close()
	withNoFeat(t, func() {
		f, err := Open(p, Options{Backend: Ring})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if got := f.RingFeatures(); got != "none" {
			t.Errorf("features %q with testNoFeat, want none", got)
		}
		if err := f.Writev(0, [][]byte{[]byte("plain")}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRingFeat_CloseReleasesLocks: a registered file holds a reference
// to the open file; Close must drop it before it returns, or the image's
// locks outlive Close and the next opener (qemu-img, or the same program
// reopening) is refused (R9).
func TestRingFeat_CloseReleasesLocks(t *testing.T) {
	needRing(t)
	p := lockTestFile(t)
	for i := range 20 {
		f, err := Open(p, Options{Backend: Ring, Direct: i%2 == 0})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Lock(rwPerm, rwShared); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := f.Writev(0, [][]byte{block.ZeroBuf()[:4096]}); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// The next writer right after Close: the first one's locks
		// must be gone.
		g, err := Open(p, Options{Backend: Threads})
		if err != nil {
			t.Fatal(err)
		}
		err = g.Lock(rwPerm, rwShared)
		g.Close()
		if err != nil {
			t.Fatalf("round %d: lock right after Close: %v", i, err)
		}
	}
}

// TestRingFeat_FixedZeros: writes from the registered zero buffer (the
// whole buffer, a piece inside it, a piece at its end) land as zeros
// over data, with O_DIRECT and without, as does a zero buffer that is not
// the registered one (R9).
func TestRingFeat_FixedZeros(t *testing.T) {
	needRing(t)
	z := block.ZeroBuf()
	for _, direct := range []bool{false, true} {
		p := filepath.Join(t.TempDir(), "f")
		data := bytes.Repeat([]byte{0xa5}, 4<<20)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := Open(p, Options{Backend: Ring, Direct: direct})
		if err != nil {
			t.Fatal(err)
		}
		if f.RingFeatures() == "none" {
			t.Skip("no optional ring features here")
		}
		writes := []struct {
			off int64
			buf []byte
		}{
			{0, z},                     // the whole buffer
			{2 << 20, z[8192:16384]},   // inside it
			{3 << 20, z[len(z)-4096:]}, // at its end
			{3<<20 + 8192, block.AlignedBuf(8192, 4096)}, // zeros, not registered
		}
		want := bytes.Clone(data)
		for _, w := range writes {
			if err := f.Writev(w.off, [][]byte{w.buf}); err != nil {
				t.Fatalf("direct=%v write at %d: %v", direct, w.off, err)
			}
			copy(want[w.off:], w.buf)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("direct=%v: file differs from the writes", direct)
		}
	}
}

// TestCaps_MergesWrites: the hint of block B10 follows merging (R8).
func TestCaps_MergesWrites(t *testing.T) {
	needRing(t)
	p := filepath.Join(t.TempDir(), "f")
	for _, c := range []struct {
		o    Options
		want bool
	}{
		{Options{Create: true, Backend: Ring}, true},
		{Options{Backend: Ring, Hybrid: true}, true},
		{Options{Backend: Ring, NoMerge: true}, false},
		{Options{Backend: Threads}, false},
	} {
		f, err := Open(p, c.o)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Caps().MergesWrites; got != c.want {
			t.Errorf("%+v: MergesWrites %v, want %v", c.o, got, c.want)
		}
		f.Close()
	}
}
