package sched

import (
	"fmt"
	"sync"

	"github.com/qring/qring/block"
)

// maxFree caps the Req free list so a burst of in-flight requests does not
// pin memory forever.
const maxFree = 1024

// Req is one tracked in-flight request. It is pooled by its Tracker: the
// caller must not touch it after End.
type Req struct {
	off, end    int64 // [off, end), end clamped against overflow
	serialising bool
	// waitingFor is non-nil while the request is blocked in Begin (QEMU's
	// waiting_for). Conflict scans skip such requests (S4).
	waitingFor *Req
	prev, next *Req // in-flight list; next also links the free list

	// gen is bumped by End. A waiter records it and sleeps until it
	// changes, so a Req recycled while someone waits on it is harmless: the
	// waiter sees the new generation and rescans (S5).
	gen uint64
	// nwait counts goroutines asleep on cond. It belongs to the object, not
	// to one incarnation, so it is never reset on reuse.
	nwait int
	cond  sync.Cond // L is the owning Tracker's mu
}

// Tracker tracks in-flight requests by byte range, like QEMU's tracked
// requests (block/io.c). The zero value is ready to use; it is safe for
// concurrent use. See the package doc for the invariants (S2..S5).
type Tracker struct {
	mu          sync.Mutex
	head        *Req // in-flight requests, newest first
	free        *Req
	nfree       int
	inFlight    int64
	serInFlight int64 // registered serialising requests; 0 lets plain requests skip the scan
	m           TrackerMetrics
}

// TrackerMetrics is a snapshot of a Tracker's counters.
type TrackerMetrics struct {
	// Begins counts successful Begin calls; Serialising those with
	// serialising set.
	Begins, Serialising int64
	// Waits counts Begin calls that slept at least once; WaitRounds counts
	// every sleep (a request can be woken, rescan and sleep again).
	Waits, WaitRounds int64
	// Busy counts noWait Begins rejected with ErrBusy.
	Busy int64
	// InFlight is the number of registered requests now; PeakInFlight the
	// most seen at once.
	InFlight, PeakInFlight int64
}

// Sub returns m minus o for the counters (InFlight and PeakInFlight are
// taken from m), for measuring an interval.
func (m TrackerMetrics) Sub(o TrackerMetrics) TrackerMetrics {
	return TrackerMetrics{
		Begins:       m.Begins - o.Begins,
		Serialising:  m.Serialising - o.Serialising,
		Waits:        m.Waits - o.Waits,
		WaitRounds:   m.WaitRounds - o.WaitRounds,
		Busy:         m.Busy - o.Busy,
		InFlight:     m.InFlight,
		PeakInFlight: m.PeakInFlight,
	}
}

func (m TrackerMetrics) String() string {
	return fmt.Sprintf("begins %d (serialising %d)  waits %d (rounds %d)  busy %d  in-flight %d (peak %d)",
		m.Begins, m.Serialising, m.Waits, m.WaitRounds, m.Busy, m.InFlight, m.PeakInFlight)
}

// Begin registers a request for [off, off+n) and returns once it may run.
//
// A conflict is an overlap where at least one side is serialising (S2). A
// serialising request waits until no conflicting request is running; a
// plain one waits only for overlapping serialising requests. With noWait,
// Begin never waits: on a conflict it returns an error matching
// block.ErrBusy and registers nothing (S3). QEMU only allows NO_WAIT with
// SERIALISING; here a plain noWait request simply fails instead of waiting
// for a serialising one.
//
// A zero-length request overlaps nothing. The returned Req must be passed
// to End exactly once.
func (t *Tracker) Begin(off, n int64, serialising, noWait bool) (*Req, error) {
	if err := block.CheckRange(off, n); err != nil {
		return nil, err
	}
	end := off + n
	t.mu.Lock()
	if noWait && t.findConflict(nil, off, end, serialising) != nil {
		// Nothing is registered yet and we hold mu throughout, so the
		// request either registers conflict-free below or not at all.
		t.m.Busy++
		t.mu.Unlock()
		return nil, ErrBusy
	}
	r := t.get()
	r.off, r.end, r.serialising = off, end, serialising
	// Register before waiting (as QEMU does) so that requests arriving
	// later see us, and so a waiter keeps its place for deadlock avoidance.
	t.insert(r)
	t.waitConflicts(r)
	t.m.Begins++
	if serialising {
		t.m.Serialising++
	}
	t.mu.Unlock()
	return r, nil
}

// waitConflicts sleeps until no running request conflicts with r. Called
// with mu held and r registered.
func (t *Tracker) waitConflicts(r *Req) {
	waited := false
	for {
		c := t.findConflict(r, r.off, r.end, r.serialising)
		if c == nil {
			break
		}
		waited = true
		t.m.WaitRounds++
		r.waitingFor = c
		gen := c.gen
		c.nwait++
		for c.gen == gen {
			c.cond.Wait()
		}
		c.nwait--
		r.waitingFor = nil
	}
	if waited {
		t.m.Waits++
	}
}

// MakeSerialising widens the running request r to cover [off, off+n) as
// well, marks it serialising, and waits until no overlapping request runs
// (QEMU's bdrv_make_request_serialising, used by file-posix to serialise a
// post-EOF zero write against every write up to infinity). Requests that
// overlap r and arrive later wait for it.
func (t *Tracker) MakeSerialising(r *Req, off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	t.mu.Lock()
	if n > 0 {
		r.off, r.end = min(r.off, off), max(r.end, off+n)
	}
	if !r.serialising {
		r.serialising = true
		t.serInFlight++
		t.m.Serialising++
	}
	// r was running, so nothing waits on it in a way that could close a
	// cycle: waiters are skipped by the scan (S4).
	t.waitConflicts(r)
	t.mu.Unlock()
	return nil
}

// End unregisters r and wakes requests waiting for it. r must not be used
// afterwards.
func (t *Tracker) End(r *Req) {
	t.mu.Lock()
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		t.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	}
	t.inFlight--
	if r.serialising {
		t.serInFlight--
	}
	r.gen++
	if r.nwait > 0 {
		r.cond.Broadcast()
	}
	if t.nfree < maxFree {
		r.prev = nil
		r.next = t.free
		t.free = r
		t.nfree++
	}
	t.mu.Unlock()
}

// Metrics returns a snapshot of the counters.
func (t *Tracker) Metrics() TrackerMetrics {
	t.mu.Lock()
	m := t.m
	m.InFlight = t.inFlight
	t.mu.Unlock()
	return m
}

// findConflict returns a running request that conflicts with [off, end)
// (S2), skipping self and requests that are themselves waiting (S4). Called
// with mu held.
func (t *Tracker) findConflict(self *Req, off, end int64, serialising bool) *Req {
	if !serialising && t.serInFlight == 0 {
		return nil // fast path: only serialising requests can block us
	}
	for q := t.head; q != nil; q = q.next {
		if q == self || (!q.serialising && !serialising) {
			continue
		}
		if max(q.off, off) < min(q.end, end) && q.waitingFor == nil { // non-empty intersection
			return q
		}
	}
	return nil
}

func (t *Tracker) get() *Req {
	r := t.free
	if r != nil {
		t.free = r.next
		t.nfree--
		r.next = nil
		return r
	}
	r = &Req{}
	r.cond.L = &t.mu
	return r
}

func (t *Tracker) insert(r *Req) {
	r.prev = nil
	r.next = t.head
	if t.head != nil {
		t.head.prev = r
	}
	t.head = r
	t.inFlight++
	if t.inFlight > t.m.PeakInFlight {
		t.m.PeakInFlight = t.inFlight
	}
	if r.serialising {
		t.serInFlight++
	}
}
