package qcow2

import (
	"errors"
	"math"
	"path/filepath"
	"runtime"
	"testing"
)

// Found by a review of the library's API as an embedding program uses it.

// A huge l2-cache-size or refcount-cache-size costs no more memory than
// the image needs: the L2 cache is capped at the image's L2 tables, as
// QEMU caps it, and the caches' admission counters are bounded (a 1 TiB
// setting on a 1 MiB image killed the process: fatal error: out of
// memory).
func TestOptions_HugeCacheSizes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 20, ClusterSize: 512}); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	im, err := Open(p, Options{L2CacheSize: 1 << 40, RefcountCacheSize: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Errorf("open with 1 TiB caches took %d MiB of heap", grew>>20)
	}
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	if _, err := im.WriteAt(buf, 300<<10); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(buf))
	if _, err := im.ReadAt(got, 300<<10); err != nil || string(got) != string(buf) {
		t.Fatalf("read back: %v", err)
	}
}

// A range whose end overflows int64 lies past the virtual size:
// ErrOutOfRange, as documented, not only block.ErrRange.
func TestWrite_OverflowingRangeOutOfRange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	off := int64(math.MaxInt64 - 4095)
	if _, err := im.WriteAt(make([]byte, 8192), off); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteAt: %v", err)
	}
	if err := im.Discard(off, 8192); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Discard: %v", err)
	}
	if err := im.WriteZeroes(off, 8192, 0); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteZeroes: %v", err)
	}
	if _, err := im.WriteAt(make([]byte, 8), -1); errors.Is(err, ErrOutOfRange) {
		t.Errorf("negative offset: %v, want block.ErrRange alone", err)
	}
}

// Open refuses preallocation options the option parser would refuse,
// given through the struct (a misspelt Prealloc opened with the reserve
// on; an alignment of 3 was taken).
func TestOptions_BadPreallocRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{{Prealloc: "bogus"}, {PreallocAlign: 3}, {PreallocAlign: -1}, {PreallocFill: "bogus"}} {
		if im, err := Open(p, o); err == nil {
			im.Close()
			t.Errorf("%+v opened", o)
		}
	}
	for _, o := range []Options{{Prealloc: "on"}, {Prealloc: "off"}, {PreallocAlign: 4096}} {
		im, err := Open(p, o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		im.Close()
	}
}
