package bench

import (
	"fmt"
	"time"

	"github.com/qring/qring/block"
)

// queueRunner runs the workload through one block.Queue (Config.Queue):
// this goroutine submits up to Depth requests, waits for a batch of
// completions, and refills. Requests go to the same offsets in the same
// order as the workers' (one counter), and keep W1-W3: its slots, requests
// and buffers are allocated before the run.
type queueRunner struct {
	r     *runner
	q     block.Queue
	reqs  []block.Req // per slot: the request, and its flush (write-through)
	flush []block.Req
	start []time.Time
	free  []uint64
	batch []*block.Req
	out   []*block.Req
	hist  Histogram
	// Interval flushes without drain: due and not yet submitted, and in
	// flight. The queue has room for one beside Depth requests; another
	// waits until that one is back.
	flushDue, flushOut int
}

func newQueueRunner(r *runner, q block.Queue, pattern byte) *queueRunner {
	d, sz := r.cfg.Depth, int(r.cfg.Size)
	arena := patternBuf(d*sz, pattern)
	if rb, ok := q.(block.BufRegisterer); ok {
		// Not registered (RLIMIT_MEMLOCK): plain requests, same results.
		_ = rb.RegisterBuffers(arena)
	}
	qr := &queueRunner{r: r, q: q, reqs: make([]block.Req, d), flush: make([]block.Req, d),
		start: make([]time.Time, d), free: make([]uint64, 0, d),
		batch: make([]*block.Req, 0, 2*d), out: make([]*block.Req, 2*d)}
	for i := range qr.reqs {
		qr.reqs[i].Buf = arena[i*sz : (i+1)*sz]
		qr.reqs[i].User = uint64(i)
		qr.flush[i] = block.Req{Op: block.OpFlush, User: uint64(i)}
		qr.free = append(qr.free, uint64(d-1-i))
	}
	return qr
}

// run issues every request; it returns the first error.
func (qr *queueRunner) run() error {
	r := qr.r
	cfg := r.cfg
	n := uint64(cfg.Count)
	fi := uint64(cfg.FlushInterval)
	drain := fi > 0 && !cfg.NoDrain
	var next, done, flushed uint64
	op := block.OpRead
	if cfg.Write {
		op = block.OpWrite
	}
	room := func() bool { return qr.q.InFlight()+len(qr.batch) < cfg.Depth+1 }
	for done < n || qr.flushDue+qr.flushOut > 0 {
		now := time.Now()
		qr.batch = qr.batch[:0]
		for qr.flushDue > 0 && qr.flushOut == 0 && room() {
			qr.batch = append(qr.batch, &block.Req{Op: block.OpFlush, User: noSlot})
			qr.flushDue--
			qr.flushOut++
		}
		for len(qr.free) > 0 && next < n && (!drain || cfg.flushesUpTo(next) <= flushed) && room() {
			i := qr.free[len(qr.free)-1]
			qr.free = qr.free[:len(qr.free)-1]
			off := offsetOf(cfg.Offset, cfg.Step, r.size, next)
			if cfg.Random {
				off = randOffset(cfg.RandSeed, next, cfg.Offset, r.size, cfg.Size)
			}
			if off+cfg.Size > r.size {
				return &RequestError{Offset: off, Len: cfg.Size, Write: cfg.Write, Err: pastEnd(r.size)}
			}
			rq := &qr.reqs[i]
			rq.Op, rq.Off, rq.Err = op, off, nil
			qr.start[i] = now
			qr.batch = append(qr.batch, rq)
			next++
		}
		if len(qr.batch) > 0 {
			if err := qr.q.Submit(qr.batch...); err != nil {
				return err
			}
		}
		// Wait for a quarter of the depth at a time: one enter reaps a
		// batch, and three quarters stay in flight meanwhile.
		k, err := qr.q.Wait(qr.out, max(1, min(qr.q.InFlight(), cfg.Depth/4)))
		if err != nil {
			return err
		}
		now = time.Now()
		qr.batch = qr.batch[:0]
		for _, rq := range qr.out[:k] {
			i := rq.User
			if i == noSlot {
				qr.flushOut--
				if rq.Err != nil {
					return fmt.Errorf("flush: %w", rq.Err)
				}
				continue
			}
			if rq.Err != nil {
				if rq.Op == block.OpFlush {
					return fmt.Errorf("flush: %w", rq.Err)
				}
				return &RequestError{Offset: rq.Off, Len: cfg.Size, Write: cfg.Write, Err: rq.Err}
			}
			if rq.Op == block.OpWrite && cfg.flushEachWrite() {
				// Write-through: the request is done when its flush is.
				qr.batch = append(qr.batch, &qr.flush[i])
				continue
			}
			qr.hist.Record(now.Sub(qr.start[i]))
			qr.free = append(qr.free, i)
			done++
			if cfg.flushAfter(done) {
				if err := qr.flushAt(done, drain); err != nil {
					return err
				}
				flushed = cfg.flushesUpTo(done)
			}
		}
		clear(qr.out[:k])
		r.done.Store(done)
		if len(qr.batch) > 0 {
			if err := qr.q.Submit(qr.batch...); err != nil {
				return err
			}
		}
	}
	return nil
}

// noSlot is the User of a flush request that belongs to no slot.
const noSlot = ^uint64(0)

// flushAt is the flush after done requests. Drained (W2), nothing else is
// in flight, so it runs on the device directly; otherwise a flush request
// goes in beside the writes, one at a time (run), and the main loop takes
// its completion.
func (qr *queueRunner) flushAt(done uint64, drain bool) error {
	r := qr.r
	r.flushes.Add(1)
	switch {
	case r.cfg.noFlush():
		return nil
	case drain:
		if err := r.dev.Flush(); err != nil {
			return fmt.Errorf("flush after %d requests: %w", done, err)
		}
		return nil
	}
	qr.flushDue++
	return nil
}
