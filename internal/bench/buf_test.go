//go:build linux

package bench

import (
	"encoding/binary"
	"os"
	"testing"
	"unsafe"
)

// pfn is the page frame number backing the page at p, from
// /proc/self/pagemap (0 when the page is not present or the process may
// not see frame numbers: they need CAP_SYS_ADMIN).
func pfn(t *testing.T, p unsafe.Pointer) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer f.Close()
	var b [8]byte
	off := int64(uintptr(p)/uintptr(os.Getpagesize())) * 8
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Skipf("pagemap: %v", err)
	}
	e := binary.LittleEndian.Uint64(b[:])
	if e&(1<<63) == 0 {
		return 0
	}
	return e & (1<<55 - 1)
}

// TestPatternBuf_NotZeroPage: a zero pattern still writes every page, so
// every page of the buffer is present and none is the kernel's shared
// zero page (which an O_DIRECT write cannot pin on the fast path). A
// buffer only read is that page; one never touched becomes it.
func TestPatternBuf_NotZeroPage(t *testing.T) {
	ps := os.Getpagesize()
	// A large allocation comes from fresh pages; reading one maps the
	// shared zero page there.
	probe := make([]byte, 64*ps)
	var sum byte
	for i := 0; i < len(probe); i += ps {
		sum += probe[i]
	}
	zero := pfn(t, unsafe.Pointer(&probe[32*ps]))
	if zero == 0 {
		t.Skip("page frame numbers are hidden here (they need CAP_SYS_ADMIN)")
	}
	if pfn(t, unsafe.Pointer(&probe[33*ps])) != zero {
		// Reused memory: two pages only read are not one shared page.
		t.Skip("the probe's pages are not the shared zero page")
	}
	b := patternBuf(64*ps, 0)
	for i := 0; i < len(b); i += ps {
		// Not present (pfn 0) would become the zero page at the first
		// O_DIRECT write, which only reads it.
		if got := pfn(t, unsafe.Pointer(&b[i])); got == zero || got == 0 {
			t.Fatalf("page %d of a zero-pattern buffer is not a page of its own (pfn %#x, the zero page %#x)", i/ps, got, zero)
		}
		if b[i] != 0 {
			t.Fatalf("byte %d: %#x", i, b[i])
		}
	}
	if p := patternBuf(ps, 0xab); p[ps-1] != 0xab || sum != 0 {
		t.Fatal("the pattern is not written")
	}
}
