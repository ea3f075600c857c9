package qcow2

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// runQueued runs one batch goroutine's own stripe through a Queue of
// depth 8 (configurations with the q token, Q14): reads, writes,
// zeroings and discards go in as long as they overlap nothing in flight
// (overlapping requests in flight have no order), each completed read
// must match the model and each completed write or zeroing must read
// back. Every other zeroing or discard instead drains the queue first,
// as an owner must before it calls a method that may wait for the write
// gate (block A3), and runs synchronously. The model takes a write,
// zeroing or discard when it completes, as for the synchronous
// goroutines.
func (r *trun) runQueued(ops []top, mu *sync.RWMutex, failf func(string, ...any), stopped func() bool,
	syncZero func(string, top) bool, nops, ryw *atomic.Int64, zs *batchZeroStats) {
	const who, depth = "queue owner", 8
	im := r.im
	q, err := im.NewQueue(depth)
	if err != nil {
		failf("%s: NewQueue: %v", who, err)
		return
	}
	defer func() {
		if err := q.Close(); err != nil {
			failf("%s: Close: %v", who, err)
		}
	}()
	inflight := map[*block.Req]top{}
	out := make([]*block.Req, depth)
	var got [depth]top
	reap := func(atLeast int) bool {
		k, err := q.Wait(out, atLeast)
		if err != nil {
			failf("%s: Wait: %v", who, err)
			return false
		}
		// Every request Wait returned leaves inflight before any is
		// checked: after a failure the deferred drain waits only for
		// what the queue still has.
		for i, rq := range out[:k] {
			got[i] = inflight[rq]
			delete(inflight, rq)
		}
		for i, rq := range out[:k] {
			o := got[i]
			if rq.Err != nil && rq.Op == block.OpWriteZeroes {
				// A refused Allocate: the range as it was.
				if !r.zeroRefused(who+" (queued)", o, rq.Err, mu, zs, failf) {
					return false
				}
				continue
			}
			if rq.Err != nil {
				failf("%s: queued %v [%#x,+%#x): %v", who, rq.Op, o.off, o.n, rq.Err)
				return false
			}
			if rq.Op == block.OpWriteZeroes && o.flags&block.Allocate != 0 {
				zs.done.Add(1)
			}
			mu.RLock()
			switch rq.Op {
			case block.OpWrite:
				copy(r.model[o.off:], rq.Buf)
			case block.OpWriteZeroes:
				clear(r.model[o.off : o.off+o.n])
			case block.OpDiscard:
				r.discardModel(r.model, o.off, o.n)
			}
			want := bytes.Clone(r.model[o.off : o.off+o.n])
			mu.RUnlock()
			if rq.Op == block.OpRead {
				if k := testkit.FirstDiff(rq.Buf, want); k >= 0 {
					failf("%s: queued read [%#x,+%#x) differs from the model at %#x", who, o.off, o.n, o.off+int64(k))
					return false
				}
				continue
			}
			got := make([]byte, o.n)
			if _, err := im.ReadAt(got, o.off); err != nil {
				failf("%s: read: %v", who, err)
				return false
			}
			ryw.Add(1)
			if k := testkit.FirstDiff(got, want); k >= 0 {
				failf("%s: read-your-writes: queued %v [%#x,+%#x) completed, the read after it differs at %#x", who, rq.Op, o.off, o.n, o.off+int64(k))
				return false
			}
		}
		clear(out)
		return true
	}
	busy := func(o top) bool {
		for _, p := range inflight {
			if o.off < p.off+p.n && p.off < o.off+o.n {
				return true
			}
		}
		return len(inflight) == depth
	}
	// Requests go in by batches of up to four (a queue may merge
	// neighbours of a batch).
	var batch []*block.Req
	submit := func() bool {
		if len(batch) == 0 {
			return true
		}
		err := q.Submit(batch...)
		batch = batch[:0]
		if err != nil {
			failf("%s: Submit: %v", who, err)
			return false
		}
		return true
	}
	drain := func() bool {
		if !submit() {
			return false
		}
		for len(inflight) > 0 {
			if !reap(len(inflight)) {
				return false
			}
		}
		return true
	}
	defer drain()
	for k, o := range ops {
		if stopped() {
			return
		}
		nops.Add(1)
		switch o.kind {
		case opWrite, opRead:
			for busy(o) {
				if !submit() || !reap(1) {
					return
				}
			}
			rq := &block.Req{Op: block.OpRead, Off: o.off, Buf: make([]byte, o.n)}
			if o.kind == opWrite {
				rq.Op = block.OpWrite
				fillPattern(rq.Buf, o.pat)
			}
			inflight[rq] = o
			batch = append(batch, rq)
			if (k+int(o.pat))%4 == 0 && !submit() {
				return
			}
		case opZero, opDiscard:
			if (k+int(o.off>>12))%2 == 0 { // the pattern has no seed here
				if !drain() || !syncZero(who, o) {
					return
				}
				continue
			}
			for busy(o) {
				if !submit() || !reap(1) {
					return
				}
			}
			rq := &block.Req{Op: block.OpDiscard, Off: o.off, Len: o.n}
			if o.kind == opZero {
				rq.Op, rq.Flags = block.OpWriteZeroes, o.flags
			}
			inflight[rq] = o
			batch = append(batch, rq)
		}
	}
}
