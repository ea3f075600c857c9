package filter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/qring/qring/block"
)

// Clock is the time source of a Throttle; tests substitute a fake.
type Clock interface {
	Now() time.Time
	Sleep(time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time        { return time.Now() }
func (realClock) Sleep(d time.Duration) { time.Sleep(d) }

// ThrottleLimits are QEMU's throttle limits (throttle-group's
// limits.iops-total etc.). Zero means unlimited. Total limits apply to
// reads and writes together, in addition to the per-direction ones.
type ThrottleLimits struct {
	IOPSTotal, IOPSRead, IOPSWrite float64 // requests per second
	BPSTotal, BPSRead, BPSWrite    float64 // bytes per second
	// Burst is how much unused budget may accumulate, as time at the
	// limit's rate (default 100 ms, at least one request / one 4 KiB
	// block), QEMU's bps-total-max-length in spirit.
	Burst time.Duration
}

// ThrottleMetrics record what the limits cost.
type ThrottleMetrics struct {
	Delayed   atomic.Int64 // requests that had to wait
	DelayNsec atomic.Int64 // total wait
}

// bucket is a token bucket that may go into debt: a request always takes
// its cost at once and waits until the balance is back to zero. A request
// larger than the burst still passes, and the next ones pay for it.
type bucket struct {
	rate, capacity float64
	tokens         float64
	last           time.Time
}

func newBucket(rate float64, burst time.Duration, minCap float64, now time.Time) *bucket {
	if rate <= 0 {
		return nil
	}
	c := max(rate*burst.Seconds(), minCap)
	return &bucket{rate: rate, capacity: c, tokens: c, last: now}
}

// take charges cost at now and returns how long the caller must wait.
func (b *bucket) take(cost float64, now time.Time) time.Duration {
	if b == nil {
		return 0
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(b.capacity, b.tokens+el*b.rate)
		b.last = now
	}
	b.tokens -= cost
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// Throttle limits the request rate and bandwidth to its child (QEMU's
// throttle filter), e.g. to make a fast disk behave like an HDD in perf
// runs. Reads and data writes are charged their bytes and one request;
// zeroing is charged as one write request and no bytes (it moves no
// data); flush is free. A discard is charged as a write of its length,
// one request and its bytes, as QEMU's throttle_co_pdiscard charges the
// write bucket (FL8). It is a passthrough layer for flags (FL1).
type Throttle struct {
	child block.Device
	clock Clock

	metered bool // a write limit is set (Caps().Metered)

	mu                  sync.Mutex
	iopsT, iopsR, iopsW *bucket
	bpsT, bpsR, bpsW    *bucket
	M                   ThrottleMetrics

	release     chan struct{} // closed by Release: no request waits any more
	releaseOnce sync.Once
}

var (
	_ block.Device    = (*Throttle)(nil)
	_ block.Discarder = (*Throttle)(nil)
)

// NewThrottle wraps child (owned, FL4). clock nil means the wall clock.
func NewThrottle(child block.Device, l ThrottleLimits, clock Clock) *Throttle {
	if clock == nil {
		clock = realClock{}
	}
	if l.Burst <= 0 {
		l.Burst = 100 * time.Millisecond
	}
	now := clock.Now()
	return &Throttle{
		child: child, clock: clock,
		metered: l.IOPSTotal > 0 || l.IOPSWrite > 0 || l.BPSTotal > 0 || l.BPSWrite > 0,
		iopsT:   newBucket(l.IOPSTotal, l.Burst, 1, now),
		iopsR:   newBucket(l.IOPSRead, l.Burst, 1, now),
		iopsW:   newBucket(l.IOPSWrite, l.Burst, 1, now),
		bpsT:    newBucket(l.BPSTotal, l.Burst, 4096, now),
		bpsR:    newBucket(l.BPSRead, l.Burst, 4096, now),
		bpsW:    newBucket(l.BPSWrite, l.Burst, 4096, now),
		release: make(chan struct{}),
	}
}

// Release lets every request waiting for the limits through at once, and
// every later one without waiting, as QEMU drains a throttle node by
// letting its queue through: for a shutdown that must not wait out a
// backlog (at iops-total=1, a queue of 60 requests is a minute). Close
// releases too. A fake Clock's Sleep is not interrupted.
func (t *Throttle) Release() { t.releaseOnce.Do(func() { close(t.release) }) }

// Delay charges one request of n bytes (write or read) to the buckets and
// returns how long it must wait; it does not sleep. Exposed so tests can
// assert the computed schedule without timing anything.
func (t *Throttle) Delay(write bool, n int64) time.Duration {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	iops, bps := t.iopsR, t.bpsR
	if write {
		iops, bps = t.iopsW, t.bpsW
	}
	d := max(t.iopsT.take(1, now), iops.take(1, now))
	if n > 0 {
		d = max(d, t.bpsT.take(float64(n), now), bps.take(float64(n), now))
	}
	return d
}

func (t *Throttle) wait(write bool, n int64) {
	select {
	case <-t.release:
		return
	default:
	}
	d := t.Delay(write, n)
	if d <= 0 {
		return
	}
	t.M.Delayed.Add(1)
	t.M.DelayNsec.Add(int64(d))
	if _, real := t.clock.(realClock); !real {
		t.clock.Sleep(d)
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-t.release:
	}
}

// admitVec validates a vectored request at off and waits until its
// bytes may pass.
func (t *Throttle) admitVec(write bool, off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	t.wait(write, n)
	return nil
}

func (t *Throttle) Readv(off int64, bufs [][]byte) error {
	if err := t.admitVec(false, off, bufs); err != nil {
		return err
	}
	return t.child.Readv(off, bufs)
}

func (t *Throttle) Writev(off int64, bufs [][]byte) error {
	if err := t.admitVec(true, off, bufs); err != nil {
		return err
	}
	return t.child.Writev(off, bufs)
}

func (t *Throttle) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := CheckFlags(t.Caps(), off, n, flags); err != nil {
		return err
	}
	t.wait(true, 0)
	return t.child.WriteZeroes(off, n, flags)
}

// Discard waits for a write of n bytes to pass the limits and forwards the
// discard to the child (FL8). On a child that is no block.Discarder it is
// block.ErrNotSupported, charged nothing and forwarded nowhere.
func (t *Throttle) Discard(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	d, ok := t.child.(block.Discarder)
	if !ok {
		return block.ErrNotSupported
	}
	t.wait(true, n)
	return d.Discard(off, n)
}

func (t *Throttle) Flush() error              { return t.child.Flush() }
func (t *Throttle) Size() (int64, error)      { return t.child.Size() }
func (t *Throttle) Truncate(size int64) error { return t.child.Truncate(size) }
func (t *Throttle) Close() error {
	t.Release()
	return t.child.Close()
}

// Caps are the child's; a write limit makes them Metered.
func (t *Throttle) Caps() block.Caps {
	c := t.child.Caps()
	c.Metered = c.Metered || t.metered
	return c
}

// Unwrap returns the child.
func (t *Throttle) Unwrap() block.Device { return t.child }
