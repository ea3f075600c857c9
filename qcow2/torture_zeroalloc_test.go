package qcow2

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// Zeroings with Allocate inside the concurrent phases: a third of the
// goroutines' own zeroings (the queue owner's too, queued or not) ask
// for Allocate, chosen from a stream of the batch's own (the op sequence
// is as before). Their stripes share clusters with the neighbours'
// whenever a stripe is smaller than a cluster or the window is oddly
// aligned, so an Allocate races writes into the same cluster and the
// next: its edges become zero clusters only where the whole cluster
// reads as zeros (block B3), while a writer beside may be filling it.
// Under crash clones the held values (expectBatch) take a zeroing's
// zeros or the bytes before it, byte by byte, either way.
//
// A refusal (ErrNotSupported) leaves each byte of the range as it was
// or zero: part-way, when a write beside filled the last edge's cluster
// after both edges were checked (zeroRange refuses there, the clusters
// before it zeroed), as QEMU's block layer zeroes the head and the
// aligned middle before the driver refuses the tail with
// BDRV_REQ_NO_FALLBACK. The goroutine reads its range back (nobody else
// writes those bytes) and the model takes what it reads.

// batchZeroAllocate returns b with Allocate on a third of its
// goroutines' zeroings.
func batchZeroAllocate(b *tbatch) *tbatch {
	rr := rand.New(rand.NewPCG(b.seed, 0x7a65726f616c6c))
	nb := *b
	nb.own = make([][]top, len(b.own))
	for g, ops := range b.own {
		nb.own[g] = slices.Clone(ops)
		for k := range nb.own[g] {
			if nb.own[g][k].kind == opZero && rr.IntN(3) == 0 {
				nb.own[g][k].flags |= block.Allocate
			}
		}
	}
	return &nb
}

// batchZeroStats count a batch's zeroings with Allocate: done, refused,
// and of those refused part-way.
type batchZeroStats struct {
	done, refused, partial atomic.Int64
}

// zeroRefused is a batch goroutine's check of its zeroing o with
// Allocate that returned err: false (and failf) unless err is a refusal
// that left each byte as it was or zero; the model takes the range as it
// reads.
func (r *trun) zeroRefused(who string, o top, err error, mu *sync.RWMutex, zs *batchZeroStats, failf func(string, ...any)) bool {
	if o.flags&block.Allocate == 0 || !errors.Is(err, block.ErrNotSupported) {
		failf("%s: zero [%#x,+%#x) %v: %v", who, o.off, o.n, o.flags, err)
		return false
	}
	zs.refused.Add(1)
	got := make([]byte, o.n)
	if _, err := r.im.ReadAt(got, o.off); err != nil {
		failf("%s: read: %v", who, err)
		return false
	}
	mu.RLock()
	defer mu.RUnlock()
	want := r.model[o.off : o.off+o.n]
	changed := false
	for k := range got {
		if got[k] == want[k] {
			continue
		}
		if got[k] != 0 {
			failf("%s: zero [%#x,+%#x) with Allocate refused (%v): guest offset %#x reads %#x, neither %#x (before) nor zero",
				who, o.off, o.n, err, o.off+int64(k), got[k], want[k])
			return false
		}
		changed = true
	}
	if changed {
		zs.partial.Add(1)
		copy(want, got)
	}
	return true
}

func (s *tstats) addBatchZeroes(zs *batchZeroStats) {
	s.BatchZeroAllocs += zs.done.Load()
	s.BatchZeroAllocRefused += zs.refused.Load()
	s.BatchZeroAllocPartial += zs.partial.Load()
}
