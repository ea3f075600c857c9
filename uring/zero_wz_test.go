//go:build linux

package uring

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// forceWriteZeroes is the test hook: f believes FALLOC_FL_WRITE_ZEROES
// works whatever its device says, so that the refusal path (U2) runs on
// machines whose devices refuse it.
func (f *File) forceWriteZeroes() {
	why := "forced by a test"
	f.wzWhy.Store(&why)
	f.wzOK.Store(true)
}

// modeFault stands in front of a File's backend and fails fallocates
// of one mode with err, counting them; the rest pass through.
type modeFault struct {
	backend
	mode  uint32
	err   error
	calls atomic.Int64
}

func (m *modeFault) fallocate(mode uint32, off, n int64) error {
	if mode == m.mode {
		m.calls.Add(1)
		return m.err
	}
	return m.backend.fallocate(mode, off, n)
}

// needZeroRange skips the test where the filesystem refuses ZERO_RANGE
// (tmpfs): there Allocate zeroing has nothing to fall back to. It asks
// with WRITE_ZEROES off, so a missing fallback cannot hide as a skip.
func needZeroRange(t *testing.T, f *File) {
	t.Helper()
	was := f.wzOK.Swap(false)
	err := f.WriteZeroes(0, 64<<10, block.Allocate)
	f.wzOK.Store(was)
	if errors.Is(err, block.ErrNotSupported) {
		t.Skipf("the filesystem refuses ZERO_RANGE: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// zeroCase writes a pattern over [0, 2n), zeroes [0, n) with Allocate and
// checks both halves; it reports the counters of the zeroing.
func zeroCase(t *testing.T, f *File, n int64) (Metrics, error) {
	t.Helper()
	data := pattern(7, int(2*n))
	if err := block.WriteAt(f, data, 0); err != nil {
		t.Fatal(err)
	}
	m0 := f.Metrics()
	err := f.WriteZeroes(0, n, block.Allocate)
	m := f.Metrics().Sub(m0)
	if err != nil {
		return m, err
	}
	if got := readAll(t, f, 0, int(n)); !bytes.Equal(got, make([]byte, n)) {
		t.Fatal("zeroed range does not read back as zeros")
	}
	if got := readAll(t, f, n, int(n)); !bytes.Equal(got, data[n:]) {
		t.Fatal("bytes past the zeroed range changed")
	}
	return m, nil
}

// TestAllocZero_WriteZeroesRefusedReal: a File that believes in
// FALLOC_FL_WRITE_ZEROES (forced) tries it on its first Allocate request;
// where the kernel refuses it (every device of the test VM: no unmap
// write zeroes), the same request is done with ZERO_RANGE, the data
// reads back as zeros, the counters say so, Zeroing and Caps tell, and
// the next request does not try again (U2, block B3, B9).
func TestAllocZero_WriteZeroesRefusedReal(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			believed, why := writeZeroesSupport(f.fd, kernelRelease())
			t.Logf("device: write-zeroes believed %v (%s)", believed, why)
			needZeroRange(t, f)
			f.forceWriteZeroes()
			if c := f.Caps(); c.ZeroFlags&block.Allocate == 0 || !c.AllocWritten {
				t.Fatalf("forced: Caps %+v, want Allocate and AllocWritten", c)
			}
			const n = 1 << 20
			m, err := zeroCase(t, f, n)
			if err != nil {
				t.Fatal(err)
			}
			if m.WriteZeroesFallocates != 1 {
				t.Fatalf("WriteZeroesFallocates = %d, want 1 (%v)", m.WriteZeroesFallocates, m)
			}
			if m.WriteZeroesRefused == 0 {
				// A device that really zeroes by unmapping: the written path.
				if m.Fallocates != 1 || !f.Caps().AllocWritten || !strings.HasPrefix(f.Zeroing(), "write-zeroes") {
					t.Fatalf("accepted: %v, Zeroing %q", m, f.Zeroing())
				}
				t.Logf("the kernel accepted FALLOC_FL_WRITE_ZEROES here; refusal path not exercised (see TestAllocZero_WriteZeroesRefused)")
				return
			}
			if believed {
				t.Logf("refused although the queue advertises unmap write zeroes (the filesystem lacks it)")
			}
			if m.WriteZeroesRefused != 1 || m.Fallocates != 2 {
				t.Fatalf("refused: %v, want 1 refusal and 2 fallocates (WRITE_ZEROES, ZERO_RANGE)", m)
			}
			if z := f.Zeroing(); !strings.HasPrefix(z, "zero-range (write-zeroes refused: ") {
				t.Fatalf("Zeroing() = %q", z)
			}
			if c := f.Caps(); c.ZeroFlags&block.Allocate == 0 || c.AllocWritten {
				t.Fatalf("after the refusal: Caps %+v, want Allocate without AllocWritten", c)
			}
			// The next request, growing the file, goes to ZERO_RANGE at once.
			m0 := f.Metrics()
			if err := f.WriteZeroes(2*n, n, block.Allocate); err != nil {
				t.Fatal(err)
			}
			if m := f.Metrics().Sub(m0); m.WriteZeroesFallocates != 0 || m.Fallocates != 1 {
				t.Fatalf("second request: %v, want one ZERO_RANGE only", m)
			}
			if sz, err := f.Size(); err != nil || sz != 3*n {
				t.Fatalf("Size = %d, %v, want %d", sz, err, 3*n)
			}
		})
	}
}

// TestAllocZero_WriteZeroesRefused: the same with the refusal injected
// below the File, so it runs wherever the kernel would accept the mode;
// every errno refused() knows falls back.
func TestAllocZero_WriteZeroesRefused(t *testing.T) {
	for _, errno := range []error{unix.EOPNOTSUPP, unix.EINVAL, unix.ENOSYS} {
		for _, c := range configs() {
			t.Run(errno.Error()+"/"+c.name, func(t *testing.T) {
				f := openTemp(t, c.opt)
				needZeroRange(t, f)
				fault := &modeFault{backend: f.io, mode: unix.FALLOC_FL_WRITE_ZEROES, err: errno}
				f.io = fault
				f.forceWriteZeroes()
				m, err := zeroCase(t, f, 256<<10)
				if err != nil {
					t.Fatal(err)
				}
				if fault.calls.Load() != 1 || m.WriteZeroesFallocates != 1 || m.WriteZeroesRefused != 1 || m.Fallocates != 2 {
					t.Fatalf("%d injected refusals, %v", fault.calls.Load(), m)
				}
				if z := f.Zeroing(); z != "zero-range (write-zeroes refused: "+errno.Error()+")" {
					t.Fatalf("Zeroing() = %q", z)
				}
				for i := range 3 {
					if err := f.WriteZeroes(int64(i)<<20, 64<<10, block.Allocate); err != nil {
						t.Fatal(err)
					}
				}
				if fault.calls.Load() != 1 || f.Metrics().WriteZeroesFallocates != 1 {
					t.Fatalf("WRITE_ZEROES tried again after its refusal: %d calls", fault.calls.Load())
				}
			})
		}
	}
}

// TestAllocZero_WriteZeroesError: an error that is not a refusal (EIO)
// is the request's error: no ZERO_RANGE behind it, and WRITE_ZEROES stays
// on (block B3: efficient or an error, never a silent change of mode).
func TestAllocZero_WriteZeroesError(t *testing.T) {
	f := openTemp(t, Options{Backend: Threads})
	fault := &modeFault{backend: f.io, mode: unix.FALLOC_FL_WRITE_ZEROES, err: unix.EIO}
	f.io = fault
	f.forceWriteZeroes()
	m0 := f.Metrics()
	err := f.WriteZeroes(0, 64<<10, block.Allocate)
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("err = %v, want EIO", err)
	}
	if m := f.Metrics().Sub(m0); m.Fallocates != 1 || m.WriteZeroesRefused != 0 {
		t.Fatalf("%v: want the one WRITE_ZEROES only", m)
	}
	if !f.wzOK.Load() || !f.Caps().AllocWritten {
		t.Fatal("an I/O error turned WRITE_ZEROES off")
	}
}

// TestAllocZero_WriteZeroesRefusedConcurrent: requests racing into the
// first refusal all complete with zeros; none fails, and afterwards none
// tries WRITE_ZEROES.
func TestAllocZero_WriteZeroesRefusedConcurrent(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			needZeroRange(t, f)
			fault := &modeFault{backend: f.io, mode: unix.FALLOC_FL_WRITE_ZEROES, err: unix.EOPNOTSUPP}
			f.io = fault
			f.forceWriteZeroes()
			const k, n = 8, 64 << 10
			data := pattern(3, k*n)
			if err := block.WriteAt(f, data, 0); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make([]error, k)
			for i := range k {
				wg.Go(func() { errs[i] = f.WriteZeroes(int64(i)*n, n, block.Allocate) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, f, 0, k*n); !bytes.Equal(got, make([]byte, k*n)) {
				t.Fatal("not all zeros")
			}
			m := f.Metrics()
			if m.WriteZeroesRefused != m.WriteZeroesFallocates || m.WriteZeroesRefused < 1 || m.WriteZeroesRefused > k {
				t.Fatalf("%v", m)
			}
			before := fault.calls.Load()
			if err := f.WriteZeroes(0, n, block.Allocate); err != nil {
				t.Fatal(err)
			}
			if fault.calls.Load() != before {
				t.Fatal("WRITE_ZEROES tried again after its refusal")
			}
		})
	}
}

// TestFile_ZeroingMode: what Open believes (from the device's sysfs
// queue, never a write) shows in Zeroing and Caps; NoWriteZeroes keeps
// ZERO_RANGE and says so.
func TestFile_ZeroingMode(t *testing.T) {
	f := openTemp(t, Options{Backend: Threads})
	believed, why := writeZeroesSupport(f.fd, kernelRelease())
	z := f.Zeroing()
	t.Logf("Zeroing() = %q", z)
	if want := "zero-range (write-zeroes " + why + ")"; believed {
		if want = "write-zeroes (" + why + ")"; z != want || !f.Caps().AllocWritten {
			t.Fatalf("Zeroing() = %q, AllocWritten %v, want %q", z, f.Caps().AllocWritten, want)
		}
	} else if z != want || f.Caps().AllocWritten {
		t.Fatalf("Zeroing() = %q, AllocWritten %v, want %q", z, f.Caps().AllocWritten, want)
	}
	if m := f.Metrics(); m.Fallocates != 0 {
		t.Fatalf("Open probed with %d fallocates", m.Fallocates)
	}

	off := openTemp(t, Options{Backend: Threads, NoWriteZeroes: true})
	if z := off.Zeroing(); z != "zero-range (write-zeroes off)" || off.Caps().AllocWritten {
		t.Fatalf("NoWriteZeroes: Zeroing() = %q, AllocWritten %v", z, off.Caps().AllocWritten)
	}
	if err := off.WriteZeroes(0, 64<<10, block.Allocate); err != nil && !errors.Is(err, block.ErrNotSupported) {
		t.Fatal(err)
	}
	if m := off.Metrics(); m.WriteZeroesFallocates != 0 {
		t.Fatalf("NoWriteZeroes: %v", m)
	}
	off.allocOK.Store(false)
	if z := off.Zeroing(); z != "none (zero-range refused)" {
		t.Fatalf("Zeroing() = %q after a ZERO_RANGE refusal", z)
	}
}
