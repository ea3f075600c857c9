//go:build linux

package uring

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// failedFlushFile opens, buffered, a device whose write-back fails
// (looptest.LoopDevice with little room) and writes more data than it can keep.
func failedFlushFile(t *testing.T, o Options) *File {
	t.Helper()
	dev := looptest.LoopDevice(t, 64<<20, 1<<20)
	f, err := Open(dev, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(rand.Uint32() | 1)
	}
	if err := f.Writev(0, [][]byte{buf}); err != nil {
		t.Fatalf("buffered write: %v", err)
	}
	return f
}

// mustStick checks that a flush after the first failure fails with
// ErrFlushFailed, still naming the first errno, without a new fdatasync.
func mustStick(t *testing.T, f *File, flush func() error) {
	t.Helper()
	before := f.Metrics().Fsyncs
	for range 2 {
		err := flush()
		if !errors.Is(err, block.ErrFlushFailed) || !errors.Is(err, unix.EIO) {
			t.Fatalf("flush after a failed flush: %v, want ErrFlushFailed wrapping EIO (U14)", err)
		}
	}
	if n := f.Metrics().Fsyncs - before; n != 0 {
		t.Errorf("%d fdatasync calls after the failure; a stuck flush asks the kernel nothing", n)
	}
}

// TestFlushFailureSticks (U14, block B6): on a device whose write-back
// failed, the first flush fails with EIO; the kernel's next fdatasync
// would succeed with the writes lost, so every later flush, through the
// File or a queue, must fail too.
func TestFlushFailureSticks(t *testing.T) {
	for _, c := range []config{{"ring", Options{Backend: Ring}}, {"threads", Options{Backend: Threads}}} {
		t.Run(c.name, func(t *testing.T) {
			f := failedFlushFile(t, c.opt)
			if err := f.Flush(); !errors.Is(err, unix.EIO) || errors.Is(err, block.ErrFlushFailed) {
				t.Fatalf("first flush: %v, want EIO", err)
			}
			// What the kernel would say now, on a second descriptor:
			// nothing (the write-back error was reported once).
			if fd, err := unix.Open(f.path, unix.O_RDWR, 0); err == nil {
				t.Logf("a plain fdatasync after the failure: %v", unix.Fdatasync(fd))
				unix.Close(fd)
			}
			mustStick(t, f, f.Flush)
			mustStick(t, f, func() error { return queuedFlush(t, f) })
		})
	}
}

// TestQueuedFlushFailureSticks: the first failure seen by a queue's
// flush (IORING_OP_FSYNC) sticks for the File's Flush and the queue.
func TestQueuedFlushFailureSticks(t *testing.T) {
	f := failedFlushFile(t, Options{Backend: Ring})
	if err := queuedFlush(t, f); !errors.Is(err, unix.EIO) || errors.Is(err, block.ErrFlushFailed) {
		t.Fatalf("first queued flush: %v, want EIO", err)
	}
	mustStick(t, f, func() error { return queuedFlush(t, f) })
	mustStick(t, f, f.Flush)
}

// queuedFlush runs one OpFlush on a new queue of f's and returns its error.
func queuedFlush(t *testing.T, f *File) error {
	t.Helper()
	q, err := block.NewQueue(f, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	req := &block.Req{Op: block.OpFlush}
	if err := q.Submit(req); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 1)
	if n, err := q.Wait(out, 1); err != nil || n != 1 {
		t.Fatalf("wait: %d, %v", n, err)
	}
	return out[0].Err
}

// TestConcurrentFlushesAllFail (U14): the kernel reports a write-back
// error to one of several concurrent fdatasync calls; flushes are
// serialised, so every flush that was running or waiting fails, through
// the File and through queues.
func TestConcurrentFlushesAllFail(t *testing.T) {
	for _, c := range []config{{"ring", Options{Backend: Ring}}, {"threads", Options{Backend: Threads}}} {
		t.Run(c.name, func(t *testing.T) {
			f := failedFlushFile(t, c.opt)
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					if i%2 == 0 {
						errs[i] = f.Flush()
					} else {
						errs[i] = queuedFlush(t, f)
					}
				})
			}
			wg.Wait()
			for i, err := range errs {
				if !errors.Is(err, unix.EIO) {
					t.Errorf("flush %d of %d concurrent ones after lost writes: %v, want EIO", i, n, err)
				}
			}
		})
	}
}

// TestNoFlush: with Options.NoFlush (QEMU's cache=unsafe), Flush and a
// queue's flush requests succeed without an fdatasync (qbench -t unsafe
// synced where qemu-img bench never does; review 53).
func TestNoFlush(t *testing.T) {
	for _, backend := range []Backend{Ring, Threads} {
		f, err := Open(filepath.Join(t.TempDir(), "f"), Options{Create: true, NoFlush: true, Backend: backend})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Writev(0, [][]byte{make([]byte, 4096)}); err != nil {
			t.Fatal(err)
		}
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
		if q, err := f.NewQueue(4); err == nil { // the ring's only
			r := &block.Req{Op: block.OpFlush}
			if err := q.Submit(r); err != nil {
				t.Fatal(err)
			}
			out := make([]*block.Req, 1)
			if _, err := q.Wait(out, 1); err != nil || r.Err != nil {
				t.Fatalf("queued flush: %v, %v", err, r.Err)
			}
			q.Close()
		} else if backend == Ring {
			t.Fatal(err)
		}
		if n := f.Metrics().Fsyncs; n != 0 {
			t.Errorf("backend %v: %d fdatasync calls, want none", backend, n)
		}
		f.Close()
	}
}
