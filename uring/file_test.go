//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// config is one backend/mode combination the tests run against.
type config struct {
	name string
	opt  Options
}

func configs() []config {
	return []config{
		{"ring", Options{Backend: Ring}},
		{"ring-direct", Options{Backend: Ring, Direct: true}},
		{"ring-direct-hybrid", Options{Backend: Ring, Direct: true, Hybrid: true}},
		{"threads", Options{Backend: Threads}},
		{"threads-direct", Options{Backend: Threads, Direct: true}},
	}
}

func openTemp(t testing.TB, o Options) *File {
	t.Helper()
	o.Create = true
	f, err := Open(filepath.Join(t.TempDir(), "img"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if o.Backend == Ring && f.Backend() != Ring {
		t.Fatalf("backend %v: %s", f.Backend(), f.BackendReason())
	}
	return f
}

func pattern(seed uint64, n int) []byte {
	b := block.AlignedBuf(n, block.DefaultMemAlign)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readAll(t testing.TB, f *File, off int64, n int) []byte {
	t.Helper()
	b := block.AlignedBuf(n, block.DefaultMemAlign)
	if err := block.ReadAt(f, b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFile_RoundTrip: concurrent writes then reads at queue depths 1..256.
func TestFile_RoundTrip(t *testing.T) {
	for _, c := range configs() {
		for _, qd := range []int{1, 8, 64, 256} {
			t.Run(fmt.Sprintf("%s/qd%d", c.name, qd), func(t *testing.T) {
				f := openTemp(t, c.opt)
				const per = 8
				const bs = 4096
				var wg sync.WaitGroup
				errc := make(chan error, qd)
				for g := range qd {
					wg.Go(func() {
						for i := range per {
							blk := int64(g*per + i)
							data := pattern(uint64(blk), 2*bs)
							// Two-buffer vector exercises writev/readv.
							if err := f.Writev(blk*2*bs, [][]byte{data[:bs], data[bs:]}); err != nil {
								errc <- err
								return
							}
						}
						for i := range per {
							blk := int64(g*per + i)
							got := block.AlignedBuf(2*bs, block.DefaultMemAlign)
							if err := f.Readv(blk*2*bs, [][]byte{got[:bs], got[bs:]}); err != nil {
								errc <- err
								return
							}
							if !bytes.Equal(got, pattern(uint64(blk), 2*bs)) {
								errc <- fmt.Errorf("block %d mismatch", blk)
								return
							}
						}
					})
				}
				wg.Wait()
				close(errc)
				for err := range errc {
					t.Fatal(err)
				}
				if c.opt.Backend == Ring && !c.opt.Hybrid {
					m := f.Metrics()
					if m.SQEs == 0 || m.CQEs != m.SQEs {
						t.Fatalf("metrics %v", m)
					}
					t.Logf("%v", m)
				}
			})
		}
	}
}

// TestFile_ZeroThenWritev_Stress: linked fallocate→write never loses the
// write.
func TestFile_ZeroThenWritev_Stress(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			const cluster = 64 << 10
			const nclusters = 256
			// Pre-fill with 0xFF so the zeroing is observable.
			ff := block.AlignedBuf(cluster, block.DefaultMemAlign)
			for i := range ff {
				ff[i] = 0xFF
			}
			for i := range nclusters / 2 { // second half: beyond EOF
				if err := block.WriteAt(f, ff, int64(i)*cluster); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			errc := make(chan error, nclusters+16)
			// Plain writes elsewhere interleave single SQEs with the linked
			// pairs in the SQ, so a submission that split a pair would show.
			stop := make(chan struct{})
			var bg sync.WaitGroup
			for g := range 16 {
				bg.Go(func() {
					buf := fill(4096, 0x5A)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						off := int64(nclusters*cluster) + int64(g*64+i%64)*4096
						if err := block.WriteAt(f, buf, off); err != nil {
							errc <- err
							return
						}
					}
				})
			}
			for i := range nclusters {
				wg.Go(func() {
					data := pattern(uint64(i), 4096)
					woff := int64(i)*cluster + int64(i%16)*4096
					if err := f.ZeroThenWritev(int64(i)*cluster, cluster, block.Allocate, woff, [][]byte{data}); err != nil {
						errc <- err
					}
				})
			}
			wg.Wait()
			close(stop)
			bg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			for i := range nclusters {
				got := readAll(t, f, int64(i)*cluster, cluster)
				want := make([]byte, cluster)
				copy(want[(i%16)*4096:], pattern(uint64(i), 4096))
				if !bytes.Equal(got, want) {
					t.Fatalf("cluster %d: write lost or zeroing missing", i)
				}
			}
			if m := f.Metrics(); m.Fallocates < nclusters {
				t.Fatalf("fallocates %d", m.Fallocates)
			}
		})
	}
}

// TestFile_Allocate_Tmpfs: tmpfs has no ZERO_RANGE, so Allocate is
// ErrNotSupported with nothing written, and Caps drops it.
func TestFile_Allocate_Tmpfs(t *testing.T) {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
		t.Skip("/dev/shm is not tmpfs")
	}
	for _, be := range []Backend{Ring, Threads} {
		t.Run(be.String(), func(t *testing.T) {
			dir, err := os.MkdirTemp("/dev/shm", "uring-test")
			if err != nil {
				t.Skip(err)
			}
			defer os.RemoveAll(dir)
			f, err := Open(filepath.Join(dir, "img"), Options{Create: true, Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			aa := bytes.Repeat([]byte{0xAA}, 1<<16)
			if err := block.WriteAt(f, aa, 0); err != nil {
				t.Fatal(err)
			}
			err = f.WriteZeroes(0, 1<<16, block.Allocate)
			if !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("WriteZeroes(Allocate) = %v", err)
			}
			mustRefuse(t, err, "ZERO_RANGE")
			if f.Caps().ZeroFlags&block.Allocate != 0 {
				t.Fatal("Allocate still advertised after refusal")
			}
			data := bytes.Repeat([]byte{0x55}, 4096)
			if err := f.ZeroThenWritev(0, 1<<16, block.Allocate, 0, [][]byte{data}); !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("ZeroThenWritev(Allocate) = %v", err)
			}
			if err := f.WriteZeroes(1<<16, 4096, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("WriteZeroes(Allocate) past EOF = %v", err)
			}
			if got := readAll(t, f, 0, 1<<16); !bytes.Equal(got, aa) {
				t.Fatal("refused Allocate modified the file")
			}
			if sz, _ := f.Size(); sz != 1<<16 {
				t.Fatalf("size %d", sz)
			}
			// Without Allocate it falls back and works.
			if err := f.WriteZeroes(100, 5000, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.WriteZeroes(20000, 5000, block.MayUnmap); err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(aa)
			clear(want[100:5100])
			clear(want[20000:25000])
			if got := readAll(t, f, 0, 1<<16); !bytes.Equal(got, want) {
				t.Fatal("WriteZeroes fallback wrong")
			}
		})
	}
}

// TestFile_Allocate_Unaligned: an Allocate range not aligned to the
// O_DIRECT alignment is ErrNotSupported without touching the file.
func TestFile_Allocate_Unaligned(t *testing.T) {
	for _, be := range []Backend{Ring, Threads} {
		t.Run(be.String(), func(t *testing.T) {
			f := openTemp(t, Options{Backend: be, Direct: true})
			al := f.Caps().Align
			if al <= 1 {
				t.Fatalf("align %d", al)
			}
			aa := block.AlignedBuf(1<<16, block.DefaultMemAlign)
			for i := range aa {
				aa[i] = 0xAA
			}
			if err := block.WriteAt(f, aa, 0); err != nil {
				t.Fatal(err)
			}
			for _, r := range [][2]int64{{1, al}, {0, al + 1}, {al / 2, al}, {1 << 16, al - 1}} {
				if err := f.WriteZeroes(r[0], r[1], block.Allocate); !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("WriteZeroes(%d,%d) = %v", r[0], r[1], err)
				}
				if err := f.ZeroThenWritev(r[0], r[1], block.Allocate, 0, [][]byte{aa[:4096]}); !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("ZeroThenWritev(%d,%d) = %v", r[0], r[1], err)
				}
			}
			if !bytes.Equal(readAll(t, f, 0, 1<<16), aa) {
				t.Fatal("file modified")
			}
			if sz, _ := f.Size(); sz != 1<<16 {
				t.Fatalf("size %d", sz)
			}
			if f.Caps().ZeroFlags&block.Allocate == 0 {
				t.Fatal("misaligned request must not disable Allocate")
			}
		})
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}

// TestFile_CloseInFlight: Close with requests in flight: every caller gets
// a result or os.ErrClosed, nothing hangs, no descriptor leaks.
func TestFile_CloseInFlight(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			before := countFDs(t)
			for round := range 5 {
				o := c.opt
				o.Create = true
				o.Entries = 16 // fewer slots than goroutines: some wait for one
				f, err := Open(filepath.Join(t.TempDir(), "img"), o)
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				bad := make(chan error, 64)
				for g := range 64 {
					wg.Go(func() {
						buf := block.AlignedBuf(4096, block.DefaultMemAlign)
						for i := 0; ; i++ {
							off := int64((g*64+i%64)*4096) % (1 << 22)
							var err error
							switch i % 4 {
							case 0, 1:
								err = block.WriteAt(f, buf, off)
							case 2:
								err = block.ReadAt(f, buf, off)
							case 3:
								err = f.WriteZeroes(off, 4096, block.Allocate)
							}
							if errors.Is(err, os.ErrClosed) {
								return
							}
							if err != nil {
								bad <- err
								return
							}
						}
					})
				}
				time.Sleep(time.Duration(1+round) * time.Millisecond)
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				if !testkit.Within(20*time.Second, wg.Wait) {
					t.Fatal("callers hang after Close")
				}
				close(bad)
				for err := range bad {
					t.Fatal(err)
				}
				if err := f.Flush(); !errors.Is(err, os.ErrClosed) {
					t.Fatalf("Flush after Close = %v", err)
				}
			}
			if after := countFDs(t); after != before {
				t.Fatalf("fd leak: %d before, %d after", before, after)
			}
		})
	}
}

// TestFile_Allocs: a steady-state 4 KiB write-and-wait on the ring does not
// allocate (R5).
func TestFile_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, direct := range []bool{false, true} {
		f := openTemp(t, Options{Backend: Ring, Direct: direct})
		buf := block.AlignedBuf(4096, block.DefaultMemAlign)
		v := [][]byte{buf}
		off := int64(0)
		for _, op := range []struct {
			name string
			runs int
			do   func() error
		}{
			{"Writev", 500, func() error { return f.Writev(off, v) }},
			{"Readv", 500, func() error { return f.Readv(off, v) }},
			{"ZeroThenWritev", 200, func() error { return f.ZeroThenWritev(off&^0xffff, 1<<16, block.Allocate, off, v) }},
		} {
			n := testing.AllocsPerRun(op.runs, func() {
				if err := op.do(); err != nil {
					t.Fatal(err)
				}
				off = (off + 4096) % (1 << 20)
			})
			if n != 0 {
				t.Errorf("direct=%v: %s allocates %.1f per op", direct, op.name, n)
			}
		}
	}
}

// TestFile_Errno: kernel errors wrap the errno (U6).
func TestFile_Errno(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			buf := block.AlignedBuf(4096, block.DefaultMemAlign)
			// Past ext4's maximum file size.
			err := block.WriteAt(f, buf, 1<<50)
			if !errors.Is(err, unix.EFBIG) {
				t.Fatalf("write past max size = %v, want EFBIG", err)
			}
			var oe *block.OpError
			if !errors.As(err, &oe) || oe.Op != "write" {
				t.Fatalf("not an OpError: %v", err)
			}
		})
	}
}

// TestFile_Backend: Threads reports itself; Auto picks the ring here.
func TestFile_Backend(t *testing.T) {
	f := openTemp(t, Options{Backend: Threads})
	if f.Backend() != Threads || f.BackendReason() != "requested" {
		t.Fatalf("%v %q", f.Backend(), f.BackendReason())
	}
	g := openTemp(t, Options{})
	if p := ProbeRing(); p.Err == nil && g.Backend() != Ring {
		t.Fatalf("auto picked %v (%s)", g.Backend(), g.BackendReason())
	} else if p.Err != nil && g.BackendReason() == "" {
		t.Fatal("fallback without a reason")
	}
	d, err := Opener(Options{})(filepath.Join(t.TempDir(), "missing"), true)
	if err == nil || d != nil {
		t.Fatalf("Opener on a missing file: %v %v", d, err)
	}
}

func TestMetrics_Sub(t *testing.T) {
	a := Metrics{Enters: 10, SQEs: 40, CQEs: 40, Fsyncs: 3}
	b := Metrics{Enters: 4, SQEs: 10, CQEs: 9, Fsyncs: 1}
	d := a.Sub(b)
	if d.Enters != 6 || d.SQEs != 30 || d.CQEs != 31 || d.Fsyncs != 2 || d.SQEsPerEnter() != 5 {
		t.Fatalf("%+v", d)
	}
	if s := d.String(); s == "" {
		t.Fatal("empty String")
	}
}

// TestFile_Fallback: where io_uring is unavailable, Auto falls back to
// Threads and says why; Ring fails.
func TestFile_Fallback(t *testing.T) {
	testNoRing = fmt.Errorf("io_uring_setup: %w", unix.EPERM)
	defer func() { testNoRing = nil }()
	f := openTemp(t, Options{})
	if f.Backend() != Threads || f.BackendReason() == "" || f.BackendReason() == "requested" {
		t.Fatalf("%v %q", f.Backend(), f.BackendReason())
	}
	t.Log(f.BackendReason())
	if err := block.WriteAt(f, fill(4096, 7), 0); err != nil {
		t.Fatal(err)
	}
	_, err := Open(filepath.Join(t.TempDir(), "x"), Options{Create: true, Backend: Ring})
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("Ring without io_uring = %v", err)
	}
}

// TestFile_SyscallFallocate: the option routes standalone fallocates to
// fallocate(2) with the same semantics.
func TestFile_SyscallFallocate(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, SyscallFallocate: true})
	if err := block.WriteAt(f, fill(1<<16, 0xAA), 0); err != nil {
		t.Fatal(err)
	}
	sqes := f.Metrics().SQEs
	if err := f.WriteZeroes(4096, 1<<16, block.Allocate); err != nil {
		t.Fatal(err)
	}
	if f.Metrics().SQEs != sqes {
		t.Fatal("fallocate went through the ring")
	}
	want := fill(4096+1<<16, 0xAA)
	clear(want[4096:])
	if !bytes.Equal(readAll(t, f, 0, len(want)), want) {
		t.Fatal("content")
	}
}

// TestFile_SmallRing: far more goroutines than slots (Entries 1: SQ 2,
// CQ 4), mixing single SQEs and linked pairs; nothing deadlocks or
// overflows.
func TestFile_SmallRing(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, Direct: true, Entries: 1})
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			buf := pattern(uint64(g), 4096)
			for i := range 20 {
				off := int64(g*20+i) * 65536
				var err error
				if i%2 == 0 {
					err = f.ZeroThenWritev(off, 65536, block.Allocate, off, [][]byte{buf})
				} else {
					err = block.WriteAt(f, buf, off)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(readAll(t, f, off, 4096), buf) {
					t.Errorf("g%d i%d mismatch", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	if m := f.Metrics(); m.CQOverflows != 0 || m.CQEs != m.SQEs {
		t.Fatalf("%v", m)
	}
}

// TestFile_ZeroThenWritevRefusedWritesNothing (U4, block B3, ZeroWriter):
// a first ZeroThenWritev with Allocate on a file whose filesystem refuses
// ZERO_RANGE (tmpfs) is ErrNotSupported and writes nothing. On the ring
// it was one linked submission, and the kernel does not cancel a write
// linked after a failed IORING_OP_FALLOCATE: the data was written.
func TestFile_ZeroThenWritevRefusedWritesNothing(t *testing.T) {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
		t.Skip("/dev/shm is not tmpfs")
	}
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("/dev/shm", "uring-test")
			if err != nil {
				t.Skip(err)
			}
			defer os.RemoveAll(dir)
			o := c.opt
			o.Create = true
			f, err := Open(filepath.Join(dir, "img"), o)
			if err != nil {
				t.Skip(err) // O_DIRECT on an old tmpfs
			}
			defer f.Close()
			aa := pattern(7, 1<<17)
			if err := f.Writev(0, [][]byte{aa}); err != nil {
				t.Fatal(err)
			}
			data := pattern(8, 4096)
			err = f.ZeroThenWritev(0, 1<<16, block.Allocate, 1<<16, [][]byte{data})
			if !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("ZeroThenWritev(Allocate) on tmpfs = %v, want ErrNotSupported", err)
			}
			testkit.MustEqual(t, readAll(t, f, 0, 1<<17), aa, "after a refused ZeroThenWritev")
		})
	}
}
