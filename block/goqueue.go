package block

import (
	"sync"
	"sync/atomic"
)

// Completions collects requests that completed on other goroutines until
// a queue's owner takes them: the slow path every Queue has (a request
// its fast path cannot take runs through Do on a goroutine).
type Completions struct {
	mu   sync.Mutex
	list []*Req
	n    atomic.Int32 // len(list), readable without mu
}

// Put adds a completed request. Any goroutine may call it; the caller
// then wakes the owner.
func (c *Completions) Put(r *Req) {
	c.mu.Lock()
	c.list = append(c.list, r)
	c.n.Store(int32(len(c.list)))
	c.mu.Unlock()
}

// Len is the number of requests waiting to be taken.
func (c *Completions) Len() int { return int(c.n.Load()) }

// Take moves up to len(out) requests into out and returns how many.
func (c *Completions) Take(out []*Req) int {
	if c.n.Load() == 0 {
		return 0
	}
	c.mu.Lock()
	k := MoveReqs(out, &c.list)
	c.n.Store(int32(len(c.list)))
	c.mu.Unlock()
	return k
}

// MoveReqs moves requests from the front of *from into to, as many as
// fit, keeps the rest in order and returns how many moved.
func MoveReqs(to []*Req, from *[]*Req) int {
	k := copy(to, *from)
	rest := copy(*from, (*from)[k:])
	clear((*from)[rest:])
	*from = (*from)[:rest]
	return k
}

// GoQueue is the Queue of a device without one of its own: each request
// runs through Do on its own goroutine. It keeps the Queue contract and
// nothing more; it is what a Queuer's fast path is measured against.
type GoQueue struct {
	d      Device
	depth  int
	flight int
	done   Completions
	sig    chan struct{} // cap 1: a completion or a Wake since the last Wait
	woken  atomic.Bool   // Wake was called
	wg     sync.WaitGroup
	closed bool
}

// NewGoQueue opens a GoQueue of the given depth on d.
func NewGoQueue(d Device, depth int) (*GoQueue, error) {
	if depth < 1 || depth > MaxQueueDepth {
		return nil, ErrRange
	}
	return &GoQueue{d: d, depth: depth, sig: make(chan struct{}, 1)}, nil
}

var _ Queue = (*GoQueue)(nil)

// Submit implements Queue.
func (q *GoQueue) Submit(reqs ...*Req) error {
	if q.closed {
		return ErrClosed
	}
	if q.flight+len(reqs) > q.depth {
		return ErrQueueFull
	}
	if err := CheckReqs(reqs); err != nil {
		return err
	}
	q.flight += len(reqs)
	for _, r := range reqs {
		q.wg.Go(func() {
			r.Err = Do(q.d, r)
			q.done.Put(r)
			q.signal()
		})
	}
	return nil
}

// Wait implements Queue.
func (q *GoQueue) Wait(out []*Req, atLeast int) (int, error) {
	if q.closed {
		return 0, ErrClosed
	}
	atLeast = ClampWait(atLeast, q.flight, len(out))
	n := 0
	for {
		k := q.done.Take(out[n:])
		n += k
		q.flight -= k
		if n >= atLeast || q.woken.Swap(false) {
			return n, nil
		}
		<-q.sig
	}
}

// ClampWait bounds a Wait's minimum by what can complete (flight) and
// what fits (room).
func ClampWait(atLeast, flight, room int) int {
	return max(0, min(atLeast, flight, room))
}

// Wake implements Queue.
func (q *GoQueue) Wake() {
	q.woken.Store(true)
	q.signal()
}

func (q *GoQueue) signal() {
	select {
	case q.sig <- struct{}{}:
	default:
	}
}

// InFlight implements Queue.
func (q *GoQueue) InFlight() int { return q.flight }

// Close implements Queue.
func (q *GoQueue) Close() error {
	if q.closed {
		return ErrClosed
	}
	q.closed = true
	q.wg.Wait()
	q.flight = 0
	return nil
}
