package blocktest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
)

// QueueConfig describes the device RunQueue checks.
type QueueConfig struct {
	// Size is the device's fixed size; 0 means it grows and starts empty.
	Size int64
	// Depth is the queue depth to test (default 16).
	Depth int
	// Ops is the number of requests of the model case (default 2000).
	Ops int
	// Check, if set, runs on the device after the model and discard
	// cases (e.g. an engine's consistency check).
	Check func(t *testing.T, d block.Device)

	open func(t *testing.T) block.Device // RunQueue's opener: the discard case's twin
}

// RunQueue checks the block.Queue that block.NewQueue opens on devices
// from open against the Queue contract (block A1-A6), one subtest per
// case:
//
//	model     random reads, writes, zeroings and flushes at depth, aligned and not,
//	          some past the end; every read matches a model, and so does the device after
//	discard   queued writes, zeroings and discards leave the bytes and the results
//	          that the same requests through Do leave on a twin device (A2)
//	full      Submit past the depth is ErrQueueFull and starts nothing
//	wake      a Wake makes the next Wait return; Wait's minimum is clamped
//	beside    synchronous Device requests on other goroutines, misaligned ones too,
//	          run beside the queue without deadlock and all land
//	poll      Wait with a minimum of 0 returns what completed, and polling collects everything
//	closed    Close waits for requests in flight; then Submit and Wait are ErrClosed, Wake is harmless
func RunQueue(t *testing.T, open func(t *testing.T) block.Device, c QueueConfig) {
	if c.Depth == 0 {
		c.Depth = 16
	}
	if c.Ops == 0 {
		c.Ops = 2000
	}
	c.open = open
	cases := []struct {
		name string
		fn   func(t *testing.T, d block.Device, c QueueConfig)
	}{
		{"model", queueModel},
		{"discard", queueDiscard},
		{"full", queueFull},
		{"wake", queueWake},
		{"beside", queueBeside},
		{"poll", queuePoll},
		{"closed", queueClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := open(t)
			tc.fn(t, d, c)
		})
	}
}

// openQueue opens a queue on d that a failed test closes (a device
// waits for its open queues to close: A6), so that the failure is
// reported instead of hanging the device's own cleanup.
func openQueue(t *testing.T, d block.Device, depth int) block.Queue {
	t.Helper()
	q, err := block.NewQueue(d, depth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			q.Close()
		}
	})
	return q
}

// queueSpan is the region the queue cases use.
func queueSpan(c QueueConfig) int64 {
	if c.Size > 0 {
		return min(c.Size, 8<<20)
	}
	return 8 << 20
}

func queueModel(t *testing.T, d block.Device, c QueueConfig) {
	caps := d.Caps()
	align := max(caps.Align, 1)
	mal := max(caps.MemAlign, block.DefaultMemAlign)
	span := queueSpan(c)
	model := make([]byte, span)
	if c.Size > 0 {
		if err := block.ReadAt(d, model, 0); err != nil {
			t.Fatal(err)
		}
	}
	q := openQueue(t, d, c.Depth)
	rng := rand.New(rand.NewPCG(uint64(c.Ops), uint64(span)))
	type pending struct {
		off, n int64
		want   []byte // for a read: the model's bytes at submit
		old    []byte // for a zeroing with Allocate: the bytes it may leave (B3)
	}
	inflight := map[*block.Req]pending{}
	busy := func(off, n int64) bool {
		for _, p := range inflight {
			if off < p.off+p.n && p.off < off+n {
				return true
			}
		}
		return false
	}
	out := make([]*block.Req, c.Depth)
	reap := func(atLeast int) {
		k, err := q.Wait(out, atLeast)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out[:k] {
			p, ok := inflight[r]
			if !ok {
				t.Fatalf("Wait returned a request not in flight: %+v", *r)
			}
			delete(inflight, r)
			if r.Op == block.OpWriteZeroes && r.Flags&block.Allocate != 0 && errors.Is(r.Err, block.ErrNotSupported) {
				// Refused, having written nothing (B3).
				copy(model[p.off:], p.old)
				continue
			}
			if r.Err != nil {
				t.Fatalf("%v at %#x+%#x (%v): %v", r.Op, r.Off, p.n, r.Flags, r.Err)
			}
			if r.Op == block.OpRead && !bytes.Equal(r.Buf, p.want) {
				t.Fatalf("read at %#x+%#x differs from the model at byte %d", r.Off, len(r.Buf), firstDiff(r.Buf, p.want))
			}
		}
		clear(out)
	}
	// Requests go in by batches of 1-8, and a third of them continue the
	// previous one (same kind, the next bytes): what a queue may merge.
	var batch []*block.Req
	submit := func() {
		if len(batch) == 0 {
			return
		}
		if err := q.Submit(batch...); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	want := 1 + rng.IntN(8)
	var prevEnd int64 = -1
	var prevOp block.Op
	for i := 0; i < c.Ops; i++ {
		if len(batch) >= want {
			submit()
			want = 1 + rng.IntN(8)
		}
		if len(inflight) == c.Depth {
			submit()
			reap(1)
		}
		var off, n int64
		misaligned := rng.IntN(8) == 0
		follow := prevEnd >= 0 && rng.IntN(3) == 0
		for {
			switch {
			case follow:
				n = align * (1 + rng.Int64N(4))
				off = prevEnd
				if off+n > span {
					follow = false
					continue
				}
			case misaligned:
				n = 1 + rng.Int64N(3*align)
				off = rng.Int64N(span - n)
			default:
				n = align * (1 + rng.Int64N(16))
				off = align * rng.Int64N((span-n)/align)
			}
			if !busy(off, n) {
				break
			}
			follow = false
			submit()
			reap(1)
		}
		r := &block.Req{Off: off, User: uint64(i)}
		p := pending{off: off, n: n}
		k := rng.IntN(20)
		if follow {
			k = 1 // a read
			if prevOp == block.OpWrite {
				k = 10
			}
		}
		switch {
		case k == 0:
			r.Op, p.n = block.OpFlush, 0
		case k < 10:
			r.Op = block.OpRead
			r.Buf = block.AlignedBuf(int(n), mal)
			fillRand(rng, r.Buf) // stale bytes the read must replace
			p.want = bytes.Clone(model[off : off+n])
		case k >= 17:
			// Zeroing (A2): plain, unmapping, or efficient-or-refused.
			r.Op = block.OpWriteZeroes
			switch rng.IntN(3) {
			case 1:
				r.Flags = block.MayUnmap & caps.ZeroFlags
			case 2:
				r.Flags = block.Allocate & caps.ZeroFlags
			}
			// Half of them, and those with Allocate, on the zeroing
			// alignment (whole clusters of an image), where they can
			// be efficient, when nothing in flight overlaps.
			if za := max(caps.ZeroAlign, align); (r.Flags&block.Allocate != 0 || rng.IntN(2) == 0) && 4*za <= span {
				zn := za * (1 + rng.Int64N(4))
				zoff := za * rng.Int64N((span-zn)/za+1)
				if !busy(zoff, zn) {
					off, n = zoff, zn
					r.Off, p.off, p.n = off, off, n
				}
			}
			r.Len = n
			if r.Flags&block.Allocate != 0 {
				p.old = bytes.Clone(model[off : off+n])
			}
			clear(model[off : off+n])
		default:
			r.Op = block.OpWrite
			r.Buf = block.AlignedBuf(int(n), mal)
			if misaligned && n > 1 {
				r.Buf = r.Buf[1:] // a buffer address O_DIRECT refuses
				n--
				p.n = n
			}
			fillRand(rng, r.Buf)
			copy(model[off:], r.Buf)
		}
		inflight[r] = p
		batch = append(batch, r)
		prevEnd, prevOp = -1, r.Op
		if r.Op != block.OpFlush {
			prevEnd = off + p.n
		}
	}
	submit()
	for len(inflight) > 0 {
		reap(len(inflight))
	}
	if q.InFlight() != 0 {
		t.Fatalf("InFlight %d after every request was returned", q.InFlight())
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	expectDev(t, d, "after the queue", 0, model, mal)
	// Past the end reads as zeros (B2), through a new queue: contiguous
	// reads in one batch from inside the device across its end (a merged
	// read comes back short: each request gets its own part) and past it.
	if c.Size == 0 {
		size, err := d.Size()
		if err != nil {
			t.Fatal(err)
		}
		q = openQueue(t, d, 8)
		first := max(0, size/align*align-2*align)
		var rs []*block.Req
		for k := int64(0); k < 4; k++ {
			r := &block.Req{Op: block.OpRead, Off: first + k*align, Buf: block.AlignedBuf(int(align), mal)}
			fillRand(rng, r.Buf)
			rs = append(rs, r)
		}
		rs = append(rs, &block.Req{Op: block.OpRead, Off: size + 4096, Buf: block.AlignedBuf(int(align), mal)})
		fillRand(rng, rs[4].Buf)
		if err := q.Submit(rs...); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(rs); {
			k, err := q.Wait(out[got:], len(rs)-got)
			if err != nil {
				t.Fatal(err)
			}
			got += k
		}
		for _, r := range rs {
			if r.Err != nil {
				t.Fatalf("read at %#x across or past the end (%#x): %v", r.Off, size, r.Err)
			}
			want := make([]byte, len(r.Buf))
			if r.Off < span {
				copy(want, model[r.Off:min(span, r.Off+int64(len(want)))])
			}
			if !bytes.Equal(r.Buf, want) {
				t.Fatalf("read at %#x across or past the end (%#x) differs at byte %d (B2)", r.Off, size, firstDiff(r.Buf, want))
			}
		}
		q.Close()
	}
	if c.Check != nil {
		c.Check(t, d)
	}
}

// queueDiscard runs random writes, zeroings and discards through a
// queue on d and, one at a time in the order they go in, through Do on a
// twin from the same opener. Requests in flight together never overlap,
// so their order does not matter (A2): the two devices must end with the
// same bytes, and each request must have the result Do gave its twin
// (success, ErrNotSupported, or another error). On a device that is no
// block.Discarder every discard is ErrNotSupported and changes nothing.
func queueDiscard(t *testing.T, d block.Device, c QueueConfig) {
	twin := c.open(t)
	caps := d.Caps()
	align := max(caps.Align, 1)
	mal := max(caps.MemAlign, block.DefaultMemAlign)
	span := queueSpan(c)
	rng := rand.New(rand.NewPCG(uint64(c.Ops), 3))
	// Written first, so that discards have data to drop.
	init := block.AlignedBuf(int(span), mal)
	fillRand(rng, init)
	for _, dev := range []block.Device{d, twin} {
		if err := block.WriteAt(dev, init, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, discards := d.(block.Discarder)
	q := openQueue(t, d, c.Depth)
	type pending struct {
		off, n int64
		want   error // Do's result on the twin
	}
	inflight := map[*block.Req]pending{}
	busy := func(off, n int64) bool {
		for _, p := range inflight {
			if off < p.off+p.n && p.off < off+n {
				return true
			}
		}
		return false
	}
	out := make([]*block.Req, c.Depth)
	var batch []*block.Req
	// By kind: write, zeroing, discard, discard that did something,
	// misaligned Allocate zeroing whose outcome the twin did not share.
	var ops [5]int
	zeroAlign := max(caps.ZeroAlign, align)
	reap := func(atLeast int) {
		if len(batch) > 0 {
			if err := q.Submit(batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
		k, err := q.Wait(out, atLeast)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out[:k] {
			p := inflight[r]
			delete(inflight, r)
			same := (r.Err == nil) == (p.want == nil) &&
				errors.Is(r.Err, block.ErrNotSupported) == errors.Is(p.want, block.ErrNotSupported)
			if !same && r.Op == block.OpWriteZeroes && r.Flags&block.Allocate != 0 &&
				!block.Aligned(p.off, p.n, zeroAlign) &&
				(r.Err == nil || errors.Is(r.Err, block.ErrNotSupported)) &&
				(p.want == nil || errors.Is(p.want, block.ErrNotSupported)) {
				// B3: a misaligned Allocate zeroing may succeed when
				// what lies beside it allows, and a write beside it in
				// flight at the same time (on one side and not the
				// other) decides. The side that refused zeroes the
				// range without Allocate, so both end with its zeros.
				ops[4]++
				if r.Err == nil {
					if err := block.Do(twin, &block.Req{Op: block.OpWriteZeroes, Off: p.off, Len: p.n}); err != nil {
						t.Fatal(err)
					}
				} else {
					z := &block.Req{Op: block.OpWriteZeroes, Off: p.off, Len: p.n}
					inflight[z] = pending{off: p.off, n: p.n}
					batch = append(batch, z)
				}
				continue
			}
			if !same {
				t.Fatalf("queued %v at %#x+%#x (%v): %v; through Do on the twin: %v", r.Op, p.off, p.n, r.Flags, r.Err, p.want)
			}
			if r.Op == block.OpDiscard && !discards && !errors.Is(r.Err, block.ErrNotSupported) {
				t.Fatalf("a discard on a device that is no Discarder: %v, want ErrNotSupported", r.Err)
			}
			if r.Op == block.OpDiscard && r.Err == nil {
				ops[3]++
			}
		}
		clear(out)
	}
	for i := 0; i < c.Ops/4; i++ {
		kind := rng.IntN(4)
		var off, n int64
		for {
			n = align * (1 + rng.Int64N(span/align/16))
			if kind == 0 {
				n = align * (1 + rng.Int64N(16)) // small writes: overwrites and allocations beside the discards
			}
			off = align * rng.Int64N((span-n)/align)
			if rng.IntN(8) == 0 && n > 1 {
				off, n = off+1, n-1
			}
			if !busy(off, n) {
				break
			}
			reap(1)
		}
		if len(inflight) == c.Depth {
			reap(1)
		}
		r := &block.Req{Off: off, User: uint64(i)}
		switch kind {
		case 0:
			r.Op = block.OpWrite
			r.Buf = block.AlignedBuf(int(n), mal)
			fillRand(rng, r.Buf)
		case 1:
			r.Op, r.Len = block.OpWriteZeroes, n
			r.Flags = []block.Flags{0, block.MayUnmap, block.Allocate}[rng.IntN(3)] & caps.ZeroFlags
		default:
			r.Op, r.Len = block.OpDiscard, n
			kind = 2
		}
		ops[kind]++
		tr := *r
		tr.Buf = bytes.Clone(r.Buf)
		inflight[r] = pending{off: off, n: n, want: block.Do(twin, &tr)}
		batch = append(batch, r)
		if len(batch) >= 1+rng.IntN(6) {
			reap(0)
		}
	}
	for len(inflight) > 0 || len(batch) > 0 {
		reap(len(inflight) + len(batch))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if discards && ops[3] == 0 {
		t.Fatalf("no queued discard succeeded (%v)", ops)
	}
	want := readDev(t, twin, 0, span, mal)
	t.Logf("misaligned Allocate zeroings decided by what was beside them: %d", ops[4])
	expectDev(t, d, fmt.Sprintf("after %d writes, %d zeroings (%d decided by what was beside them) and %d discards, against the twin", ops[0], ops[1], ops[4], ops[2]), 0, want, mal)
	if c.Check != nil {
		c.Check(t, d)
	}
}

// fillRand fills b from rng.
func fillRand(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

func queueFull(t *testing.T, d block.Device, c QueueConfig) {
	q := openQueue(t, d, 2)
	defer q.Close()
	mk := func(off int64) *block.Req {
		return &block.Req{Op: block.OpRead, Off: off, Buf: block.AlignedBuf(4096, block.DefaultMemAlign)}
	}
	if err := q.Submit(mk(0), mk(4096), mk(8192)); !errors.Is(err, block.ErrQueueFull) {
		t.Fatalf("three requests on a queue of two: %v, want ErrQueueFull", err)
	}
	if q.InFlight() != 0 {
		t.Fatalf("a refused Submit left %d in flight", q.InFlight())
	}
	if err := q.Submit(mk(0), mk(4096)); err != nil {
		t.Fatal(err)
	}
	if err := q.Submit(mk(8192)); !errors.Is(err, block.ErrQueueFull) {
		t.Fatalf("a third request on a full queue of two: %v", err)
	}
	out := make([]*block.Req, 4)
	n := 0
	for n < 2 {
		k, err := q.Wait(out[n:], 2-n)
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
}

func queueWake(t *testing.T, d block.Device, c QueueConfig) {
	q := openQueue(t, d, 4)
	defer q.Close()
	out := make([]*block.Req, 4)
	// Nothing in flight: the minimum is clamped to 0.
	if k, err := q.Wait(out, 3); k != 0 || err != nil {
		t.Fatalf("Wait on an empty queue: %d %v", k, err)
	}
	q.Wake()
	if k, err := q.Wait(out, 1); k != 0 || err != nil {
		t.Fatalf("Wait after Wake: %d %v", k, err)
	}
	// A Wake from another goroutine while the owner waits.
	r := &block.Req{Op: block.OpFlush}
	if err := q.Submit(r); err != nil {
		t.Fatal(err)
	}
	go q.Wake()
	got := 0
	for got < 1 {
		k, err := q.Wait(out, 1)
		if err != nil {
			t.Fatal(err)
		}
		got += k
	}
	if out[0] != r || r.Err != nil {
		t.Fatalf("flush: %v", r.Err)
	}
}

func queueBeside(t *testing.T, d block.Device, c QueueConfig) {
	caps := d.Caps()
	align := max(caps.Align, 1)
	mal := max(caps.MemAlign, block.DefaultMemAlign)
	span := queueSpan(c)
	half := span / 2 / align * align
	q := openQueue(t, d, c.Depth)
	defer q.Close()
	// Synchronous writes, most of them misaligned (read-modify-write on
	// an O_DIRECT file), in the upper half while the queue writes the
	// lower half.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var syncErr error
	side := make([]byte, span-half)
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(7, 7))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n := 1 + rng.Int64N(2*align)
			off := rng.Int64N(int64(len(side)) - n)
			b := make([]byte, n)
			fillRand(rng, b)
			if err := block.WriteAt(d, b, half+off); err != nil {
				syncErr = err
				return
			}
			copy(side[off:], b)
		}
	})
	want := make([]byte, half)
	rng := rand.New(rand.NewPCG(8, 8))
	out := make([]*block.Req, c.Depth)
	bufs := make([][]byte, c.Depth)
	for i := range bufs {
		bufs[i] = block.AlignedBuf(int(align), mal)
	}
	free := bufs
	deadline := time.Now().Add(200 * time.Millisecond)
	for next := int64(0); time.Now().Before(deadline) || q.InFlight() > 0; {
		if len(free) > 0 && time.Now().Before(deadline) {
			b := free[len(free)-1]
			free = free[:len(free)-1]
			fillRand(rng, b)
			off := next % half
			next += align
			copy(want[off:], b)
			if err := q.Submit(&block.Req{Op: block.OpWrite, Off: off, Buf: b}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		k, err := q.Wait(out, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out[:k] {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			free = append(free, r.Buf)
		}
	}
	close(stop)
	wg.Wait()
	if syncErr != nil {
		t.Fatal(syncErr)
	}
	got := readDev(t, d, half, span-half, mal)
	if !bytes.Equal(got, side) {
		t.Fatalf("synchronous writes beside the queue: differ at byte %d", firstDiff(got, side))
	}
	// A buffer is reused only after its write completed, and an offset
	// comes round again only half/align writes later: the last write of
	// each offset is the one that stays.
	got = readDev(t, d, 0, half, mal)
	if !bytes.Equal(got, want) {
		t.Fatalf("queued writes beside synchronous ones: differ at byte %d", firstDiff(got, want))
	}
}

func queuePoll(t *testing.T, d block.Device, c QueueConfig) {
	q := openQueue(t, d, 8)
	defer q.Close()
	mal := max(d.Caps().MemAlign, block.DefaultMemAlign)
	var reqs []*block.Req
	for i := range 8 {
		b := block.AlignedBuf(4096, mal)
		b[0] = byte(i)
		reqs = append(reqs, &block.Req{Op: block.OpWrite, Off: int64(i) * 4096, Buf: b})
	}
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 8)
	got := 0
	for deadline := time.Now().Add(30 * time.Second); got < len(reqs); {
		if time.Now().After(deadline) {
			t.Fatalf("polling with Wait(out, 0) collected %d of %d requests in 30 s", got, len(reqs))
		}
		k, err := q.Wait(out[got:], 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out[got : got+k] {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		got += k
	}
	if q.InFlight() != 0 {
		t.Fatalf("InFlight %d after polling everything back", q.InFlight())
	}
}

func queueClosed(t *testing.T, d block.Device, c QueueConfig) {
	q := openQueue(t, d, 4)
	b := block.AlignedBuf(4096, block.DefaultMemAlign)
	for i := range b {
		b[i] = 0x5a
	}
	r := &block.Req{Op: block.OpWrite, Off: 0, Buf: b}
	if err := q.Submit(r); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	expectDev(t, d, "a write in flight at Close", 0, b, block.DefaultMemAlign)
	if err := q.Submit(&block.Req{Op: block.OpFlush}); !errors.Is(err, block.ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if _, err := q.Wait(make([]*block.Req, 1), 1); !errors.Is(err, block.ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
	if err := q.Close(); !errors.Is(err, block.ErrClosed) {
		t.Fatal(fmt.Errorf("second Close: %v", err))
	}
	q.Wake() // from any goroutine, at any time: after Close it does nothing
	done := make(chan struct{})
	go func() { q.Wake(); close(done) }()
	<-done
}

// CheckNilSubmit submits a nil request (with a valid one beside it) and
// expects ErrNilReq with nothing started: no panic, nothing counted in
// flight, and a Close that returns. Before the fix every queue counted
// the batch, then panicked on the nil request, so InFlight stayed 1 for
// ever and Close (and the device's Close) hung; GoQueue panicked on its
// own goroutine, ending the process.
func CheckNilSubmit(t *testing.T, q block.Queue) {
	t.Helper()
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Submit(nil) panicked: %v", r)
			}
		}()
		err = q.Submit(&block.Req{Op: block.OpRead, Buf: make([]byte, 512)}, nil)
	}()
	if err == nil {
		t.Errorf("Submit(valid, nil) = nil, want an error (block.ErrNilReq)")
	}
	time.Sleep(50 * time.Millisecond) // a GoQueue's goroutine would crash here
	if n := q.InFlight(); n != 0 {
		t.Errorf("InFlight after a refused Submit = %d, want 0", n)
	}
	done := make(chan error, 1)
	go func() { done <- q.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queue Close hangs after Submit(nil)")
	}
}
