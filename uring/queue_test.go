//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// TestQueue: a File's own Queue keeps the Queue contract (block Q1-Q6)
// in every ring mode, with O_DIRECT's misaligned requests, short reads at
// the end of the file and writes past it on its slow path (Q4).
func TestQueue(t *testing.T) {
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			blocktest.RunQueue(t, func(t *testing.T) block.Device {
				return openTemp(t, c.opt)
			}, blocktest.QueueConfig{})
		})
		t.Run(c.name+"/vec", func(t *testing.T) {
			blocktest.RunQueue(t, func(t *testing.T) block.Device {
				return vecFile{openTemp(t, c.opt)}
			}, blocktest.QueueConfig{})
		})
	}
}

// vecFile is a File whose queue is its vector queue.
type vecFile struct{ *File }

func (v vecFile) NewQueue(depth int) (block.Queue, error) { return v.NewVecQueue(depth) }

// TestQueue_PastEOF: aligned writes that extend the file go to the ring
// holding the EOF gate (U10, U3), not to the slow path, and raise the
// known EOF; an extending fallocate after them sees it.
func TestQueue_PastEOF(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, Direct: true, NoMerge: true})
	q, err := f.NewQueue(16)
	if err != nil {
		t.Fatal(err)
	}
	buf := pattern(7, 16*4096)
	reqs := make([]*block.Req, 16)
	for i := range reqs {
		// Every other block: holes between the writes, all past EOF.
		reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(2*i) * 4096, Buf: buf[i*4096 : (i+1)*4096]}
	}
	before := f.Metrics()
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	if err := block.Drain(q); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if m := f.Metrics().Sub(before); m.QueueSlow != 0 {
		t.Errorf("%d of 16 writes past EOF took the slow path", m.QueueSlow)
	}
	if got, want := f.eof.Load(), int64(31*4096); got != want {
		t.Errorf("known EOF %d after the writes, want %d", got, want)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteZeroes(32*4096, 4096, block.Allocate); err != nil && !errors.Is(err, block.ErrNotSupported) {
		t.Fatal(err)
	}
	for i := range reqs {
		got := readAll(t, f, int64(2*i)*4096, 4096)
		if !bytes.Equal(got, buf[i*4096:(i+1)*4096]) {
			t.Fatalf("block %d differs", 2*i)
		}
		if hole := readAll(t, f, int64(2*i+1)*4096, 4096); !bytes.Equal(hole, make([]byte, 4096)) {
			t.Fatalf("hole %d is not zeros", 2*i+1)
		}
	}
}

// TestQueue_Ring: on a ring File the queue is the File's own and sends
// aligned requests to its ring: none of them takes the slow path (Q3),
// and a batch of them costs about one enter.
func TestQueue_Ring(t *testing.T) {
	for _, direct := range []bool{false, true} {
		f := openTemp(t, Options{Backend: Ring, Direct: direct, NoMerge: true})
		qq, err := block.NewQueue(f, 32)
		if err != nil {
			t.Fatal(err)
		}
		q, ok := qq.(*Queue)
		if !ok {
			t.Fatalf("block.NewQueue on a ring File gave %T", qq)
		}
		buf := pattern(1, 32*4096)
		if err := block.WriteAt(f, buf, 0); err != nil { // below EOF from here on
			t.Fatal(err)
		}
		before := f.Metrics()
		reqs := make([]*block.Req, 32)
		for round := 0; round < 20; round++ {
			for i := range reqs {
				op := block.OpWrite
				if round%2 == 1 {
					op = block.OpRead
				}
				reqs[i] = &block.Req{Op: op, Off: int64(i) * 4096, Buf: buf[i*4096 : (i+1)*4096]}
			}
			if err := q.Submit(reqs...); err != nil {
				t.Fatal(err)
			}
			out := make([]*block.Req, 32)
			for n := 0; n < 32; {
				k, err := q.Wait(out[n:], 32-n)
				if err != nil {
					t.Fatal(err)
				}
				n += k
			}
			for _, r := range out {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
			}
		}
		m := f.Metrics().Sub(before)
		if m.QueueSlow != 0 {
			t.Errorf("direct=%v: %d aligned requests took the slow path", direct, m.QueueSlow)
		}
		if m.SQEs < 640 || m.Enters > 3*20 {
			t.Errorf("direct=%v: 640 requests in batches of 32: %d SQEs in %d enters (%v)", direct, m.SQEs, m.Enters, m)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, f, 0, len(buf)); !bytes.Equal(got, buf) {
			t.Fatalf("direct=%v: data differs", direct)
		}
	}
}

// TestQueue_FileCloseWaits: File.Close waits for an open queue (Q6):
// the queue's requests never meet a closed descriptor.
func TestQueue_FileCloseWaits(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, Direct: true})
	q, err := f.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("File.Close returned (%v) with a queue open", err)
	case <-time.After(50 * time.Millisecond):
	}
	b := pattern(2, 4096)
	if err := q.Submit(&block.Req{Op: block.OpWrite, Buf: b}); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 1)
	if k, err := q.Wait(out, 1); err != nil || k != 1 || out[0].Err != nil {
		t.Fatalf("a write on the queue while Close waits: %d %v", k, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// TestQueue_RegisterBuffers: requests from registered buffers become
// READ_FIXED/WRITE_FIXED and round-trip; registering with requests in
// flight is refused.
// Merged requests ride on a vector SQE, which is never fixed, and
// Metrics.Fixed counts the SQEs that stayed fixed.
func TestQueue_RegisterBuffers(t *testing.T) {
	for _, merge := range []bool{false, true} {
		t.Run(fmt.Sprintf("merge=%v", merge), func(t *testing.T) { testRegisterBuffers(t, merge) })
	}
}

func testRegisterBuffers(t *testing.T, merge bool) {
	f := openTemp(t, Options{Backend: Ring, Direct: true})
	q, err := f.newQueue(8, merge)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	arena := block.AlignedBuf(8*4096, block.DefaultMemAlign)
	if err := q.RegisterBuffers(arena); err != nil {
		t.Skipf("buffers not registered here: %v", err)
	}
	if e := q.rwSQE(true, &block.Req{Buf: arena[4096:8192]}); !e.hasBuf || e.buf != 1 {
		t.Fatalf("a buffer inside the arena: %+v", e)
	}
	if e := q.rwSQE(true, &block.Req{Buf: arena[4096 : 8*4096+0]}); !e.hasBuf {
		t.Fatalf("the arena's tail: %+v", e)
	}
	other := block.AlignedBuf(4096, block.DefaultMemAlign)
	if e := q.rwSQE(true, &block.Req{Buf: other}); e.hasBuf {
		t.Fatalf("a buffer outside: %+v", e)
	}
	copy(arena, pattern(3, len(arena)))
	want := bytes.Clone(arena)
	m0 := f.Metrics()
	reqs := make([]*block.Req, 8)
	for i := range reqs {
		reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(i) * 4096, Buf: arena[i*4096 : (i+1)*4096]}
	}
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	if err := q.RegisterBuffers(arena); !errors.Is(err, block.ErrBusy) {
		t.Fatalf("RegisterBuffers with requests in flight: %v", err)
	}
	out := make([]*block.Req, 8)
	for n := 0; n < 8; {
		k, err := q.Wait(out[n:], 8-n)
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	clear(arena)
	for i := range reqs {
		reqs[i].Op = block.OpRead
	}
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 8; {
		k, err := q.Wait(out[n:], 8-n)
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	switch m := f.Metrics().Sub(m0); {
	case !merge && m.Fixed != 16:
		t.Errorf("8 writes and 8 reads from the arena, unmerged: %d fixed SQEs", m.Fixed)
	case merge && (m.Merged != 14 || m.Fixed != 0):
		// Each Submit's 8 requests ride on one vector SQE.
		t.Errorf("8 writes and 8 reads from the arena, %d merged: %d fixed SQEs", m.Merged, m.Fixed)
	}
	if !bytes.Equal(arena, want) {
		t.Fatal("fixed reads do not give back the fixed writes")
	}
	if got := readAll(t, f, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("the file does not hold the fixed writes")
	}
}

// TestQueue_Allocs: the ring path of a Queue allocates nothing per
// request (R5 for the queue).
func TestQueue_Allocs(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, Direct: true})
	buf := pattern(4, 16*4096)
	if err := block.WriteAt(f, buf, 0); err != nil {
		t.Fatal(err)
	}
	q, err := f.newQueue(16, f.mergesWrites())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	reqs := make([]*block.Req, 16)
	for i := range reqs {
		reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(i) * 4096, Buf: buf[i*4096 : (i+1)*4096]}
	}
	out := make([]*block.Req, 16)
	n := testing.AllocsPerRun(200, func() {
		if err := q.Submit(reqs...); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 16; {
			k, err := q.Wait(out[got:], 16-got)
			if err != nil {
				t.Fatal(err)
			}
			got += k
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per batch of 16", n)
	}
}

// TestQueue_Merge: contiguous requests of one Submit ride on one SQE
// (U13) unless NoMerge, and each gets its own bytes; a merged read that
// runs past the end of the file comes back short, and each request still
// gets exactly its part, zeros past the end (B2).
func TestQueue_Merge(t *testing.T) {
	for _, c := range []struct{ noMerge, vec bool }{{false, false}, {true, false}, {true, true}} {
		f := openTemp(t, Options{Backend: Ring, Direct: true, NoMerge: c.noMerge})
		open := f.NewQueue
		if c.vec {
			open = f.NewVecQueue // merges whatever the File's setting
		}
		q, err := open(32)
		noMerge := c.noMerge && !c.vec
		if err != nil {
			t.Fatal(err)
		}
		buf := pattern(5, 32*4096)
		if err := block.WriteAt(f, make([]byte, 32*4096), 0); err != nil { // below EOF
			t.Fatal(err)
		}
		run := func(op block.Op, bufs []byte, first int64) {
			reqs := make([]*block.Req, len(bufs)/4096)
			for i := range reqs {
				reqs[i] = &block.Req{Op: op, Off: first + int64(i)*4096, Buf: bufs[i*4096 : (i+1)*4096]}
			}
			blocktest.MustComplete(t, q, reqs...)
		}
		before := f.Metrics()
		run(block.OpWrite, buf, 0)
		m := f.Metrics().Sub(before)
		if noMerge && m.Merged != 0 || !noMerge && (m.Merged != 31 || m.SQEs > 2) {
			t.Errorf("noMerge=%v: 32 contiguous writes in one Submit: %d merged, %d SQEs", noMerge, m.Merged, m.SQEs)
		}
		got := block.AlignedBuf(len(buf), block.DefaultMemAlign)
		run(block.OpRead, got, 0)
		if !bytes.Equal(got, buf) {
			t.Fatalf("noMerge=%v: merged reads differ from merged writes", noMerge)
		}
		// Eight reads from 4 blocks before the end: the last four are past it.
		tail := block.AlignedBuf(8*4096, block.DefaultMemAlign)
		for i := range tail {
			tail[i] = 0xee
		}
		run(block.OpRead, tail, 28*4096)
		want := append(bytes.Clone(buf[28*4096:]), make([]byte, 4*4096)...)
		if !bytes.Equal(tail, want) {
			t.Fatalf("noMerge=%v: reads across the end differ at byte %d", noMerge, testkit.FirstDiff(tail, want))
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQueue_WakeEndsLongWait (U11, block A5): a Wake ends a Wait for
// more than one request while the ring's requests are slow to complete.
// The eventfd read a Wake completes is one completion, and the Wait slept
// in the kernel for two: it stayed there until a request completed. The
// slow requests are reads of a FIFO, which complete when it is written.
func TestQueue_WakeEndsLongWait(t *testing.T) {
	_, q, path := fifoQueue(t)
	feed := func() { // completes the reads
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		w.Write(make([]byte, 16))
		w.Close()
	}
	woke := make(chan error, 1)
	go func() {
		out := make([]*block.Req, 2)
		_, err := q.Wait(out, 2)
		woke <- err
	}()
	time.Sleep(20 * time.Millisecond) // the owner sleeps in the kernel
	q.Wake()
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Wake did not end a Wait for two slow requests in 10 s")
		feed()
		<-woke
	}
	out := make([]*block.Req, 2)
	for q.InFlight() > 0 {
		feed()
		if _, err := q.Wait(out, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestQueue_SizeBesideRMW (U10, U1, block A3): the owner of a queue on an
// O_DIRECT File may ask Size and DataRun while its writes are in flight
// and a misaligned write (a read-modify-write, wmu exclusive) waits for
// them. Both took wmu shared, queued behind that write: the owner
// blocked, never reaped its writes, and the three waited for each other
// for good.
func TestQueue_SizeBesideRMW(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, Direct: true})
	q, err := f.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	w := &block.Req{Op: block.OpWrite, Off: 0, Buf: pattern(3, 4096)}
	if err := q.Submit(w); err != nil {
		t.Fatal(err)
	}
	rmw := make(chan error, 1)
	go func() { rmw <- f.Writev(8192+100, [][]byte{[]byte("misaligned")}) }()
	time.Sleep(20 * time.Millisecond) // the read-modify-write waits for wmu
	// A hang guard (it was 1 s): the bug is a deadlock, not a slowdown.
	ok := testkit.Within(20*time.Second, func() {
		if _, err := f.Size(); err != nil {
			t.Error(err)
		}
		if _, _, err := f.DataRun(0, 4096); err != nil {
			t.Error(err)
		}
	})
	if !ok {
		t.Error("Size or DataRun blocked the queue's owner behind a read-modify-write waiting for its writes")
	}
	out := make([]*block.Req, 1)
	if k, err := q.Wait(out, 1); k != 1 || err != nil || w.Err != nil {
		t.Fatalf("Wait: %d %v %v", k, err, w.Err)
	}
	if err := <-rmw; err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestQueue_TruncateBesideWriteKeepsEOF (U3, U10): a write inside the
// known EOF takes no EOF gate, so a Truncate below it may run while it
// is in flight; raising eof to the write's end when it completed then
// made eof larger than the file, and a later extending zeroing inside
// that range took no gate (U3 lost for good). Only a gated write raises
// eof.
func TestQueue_TruncateBesideWriteKeepsEOF(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring})
	if err := f.Writev(0, [][]byte{pattern(4, 16384)}); err != nil {
		t.Fatal(err)
	}
	q, err := f.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	w := &block.Req{Op: block.OpWrite, Off: 0, Buf: pattern(5, 8192)}
	if err := q.Submit(w); err != nil {
		t.Fatal(err)
	}
	// The write is done in the kernel, not yet reaped: a Truncate (from
	// another goroutine, as A3 asks) shrinks the file below its end.
	time.Sleep(10 * time.Millisecond)
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 1)
	if k, err := q.Wait(out, 1); k != 1 || err != nil || w.Err != nil {
		t.Fatalf("Wait: %d %v %v", k, err, w.Err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	size, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	if eof := f.eof.Load(); eof > size {
		t.Fatalf("known EOF %d past the file's size %d (U3: a lower bound)", eof, size)
	}
}

// TestQueue_LongWaitNoPolling (U11): a Wait for a batch of slow requests
// sleeps in one enter until they complete, and a Wake still ends it. A
// Wait whose sleep was bounded (1 ms) to notice Wakes woke every
// millisecond instead: dozens of enters in 60 ms, and batches on a busy
// disk spread over several enters.
func TestQueue_LongWaitNoPolling(t *testing.T) {
	f, q, path := fifoQueue(t)
	w, err := os.OpenFile(path, os.O_WRONLY, 0) // f holds the read end
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := f.Metrics()
	done := make(chan error, 1)
	go func() {
		out := make([]*block.Req, 2)
		n := 0
		for n < 2 {
			k, err := q.Wait(out[n:], 2-n)
			if err != nil {
				done <- err
				return
			}
			n += k
		}
		done <- nil
	}()
	time.Sleep(60 * time.Millisecond)
	if _, err := w.Write(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := f.Metrics().Sub(before); m.Enters > 4 {
		t.Errorf("a Wait for two requests that took 60 ms made %d enters, want a few", m.Enters)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// fifoQueue opens a File (Backend Ring) on a new FIFO, at the returned
// path, and a queue of depth 4 on it, and submits two reads of the FIFO:
// slow requests, which complete only when the FIFO is written. Not
// adjacent: two SQEs, so a Wait for both sleeps for two completions.
func fifoQueue(t *testing.T) (*File, block.Queue, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, Options{Backend: Ring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	q, err := f.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	reqs := []*block.Req{{Op: block.OpRead, Off: 0, Buf: make([]byte, 8)}, {Op: block.OpRead, Off: 4096, Buf: make([]byte, 8)}}
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	return f, q, path
}
