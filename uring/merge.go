//go:build linux

package uring

import "golang.org/x/sys/unix"

// Merging (R8): a data SQE is staged (filled, not published) so that a
// later request that continues it can ride on it; the reaper splits the
// merged SQE's result among its requests.

// Merge limits (R8): iovecs per merged SQE (each slot's iov has this
// capacity, so a merge never reallocates an array the kernel may read),
// bytes per merged SQE, and how many staged SQEs a request looks back.
const (
	mergeIov   = 64
	mergeBytes = 1 << 20
	mergeScan  = 32
)

// queueRW queues the data SQE e of slot idx (n bytes at off, iovecs in
// the slot's iov). With merging on (R8) it rides on a staged SQE of the
// same kind that ends at off, or else is staged itself for later requests
// to ride on; the next enter publishes it.
func (r *ring) queueRW(idx uint32, e sqe, write bool, off, n int64) {
	s := &r.slots[idx]
	merge := r.merge && !s.noMerge
	r.waiting.Add(1)
	r.mu.Lock()
	if merge && r.ride(idx, write, e.fd, off, n) {
		r.mu.Unlock()
		r.m.merged.Add(1)
		return
	}
	t := r.tail
	r.fill(t, e, uint64(idx)*2)
	r.sqOwner[t&r.sqMask] = idx
	s.write, s.fd, s.off, s.end, s.own, s.nOwn = write, e.fd, off, off+n, n, len(s.iov)
	s.riders = s.riders[:0]
	s.nRiders.Store(0)
	r.setTail(t+1, !merge) // unmerged: published at once, staged SQEs before it too
	r.mu.Unlock()
}

// ride appends request idx (n bytes at off) to a staged SQE of the same
// kind and descriptor that ends at off, looking back at most mergeScan
// staged SQEs, and reports whether it found one. The caller holds mu.
func (r *ring) ride(idx uint32, write bool, fd int32, off, n int64) bool {
	s := &r.slots[idx]
	pub := r.sqTail.Load() // stored only under mu
	for t, k := r.tail, 0; t != pub && k < mergeScan; k++ {
		t--
		hidx := r.sqOwner[t&r.sqMask]
		h := &r.slots[hidx]
		// The array must not grow (the kernel may read it) and the
		// merged SQE must stay within IOV_MAX: a slot whose array
		// grew for a long vector has a capacity past maxIov, and
		// the kernel answers EINVAL to more than IOV_MAX iovecs.
		if h.end != off || h.write != write || h.fd != fd ||
			len(h.iov)+len(s.iov) > min(cap(h.iov), maxIov) || h.end-h.off+n > mergeBytes {
			continue
		}
		s.own = n // split reads it
		h.iov = append(h.iov, s.iov...)
		h.end += n
		h.riders = append(h.riders, idx)
		h.nRiders.Store(int32(len(h.riders)))
		r.fill(t, vecSQE(write, h.fd, h.off, h.iov), uint64(hidx)*2)
		return true
	}
	return false
}

// split hands the result of merged SQE of slot h to each request in it
// (R8): in order, each gets its own bytes of the transfer; a request the
// transfer did not reach gets -EAGAIN and resubmits; on an error or a
// zero result every request gets -EAGAIN and resubmits alone (noMerge),
// so each sees its own result. It returns how many slots other than own it signalled.
func (r *ring) split(h *slot, res int32, own *slot, ownGot *int) int {
	// Acquire what merging writers did to h under mu while it was
	// staged: the publish of h's SQE (under mu, after them) happened
	// before its completion. The kernel orders this in fact; loading
	// pubGen (bumped at every publish, in Go memory) makes it an edge of
	// the Go memory model and of the race detector, since the reaper may
	// never have taken mu.
	_ = r.pubGen.Load()
	n := int(h.nRiders.Load())
	if r.testSplit != nil {
		res = r.testSplit(res)
	}
	if res <= 0 {
		r.m.mergeSplits.Add(1)
	}
	rem := int64(res)
	for i := -1; i < n; i++ {
		m := h
		if i >= 0 {
			m = &r.slots[h.riders[i]]
		}
		var v int32
		switch {
		case res <= 0:
			// An error, or nothing moved: we cannot tell whose part
			// caused it, so each request retries alone for its own
			// result.
			v = -int32(unix.EAGAIN)
			m.noMerge = true
		case rem == 0 && i >= 0:
			v = -int32(unix.EAGAIN)
		default:
			v = int32(min(rem, m.own))
			rem -= int64(v)
		}
		m.res[0].Store(v)
	}
	// The head's owner may resubmit its own SQE: drop the riders' iovecs
	// (and their buffer pointers) from its array. All of this happens
	// before the head's owner is signalled (it may free the slot at once).
	clear(h.iov[h.nOwn:])
	h.iov = h.iov[:h.nOwn]
	h.end = h.off + h.own
	others := 0
	for _, ri := range h.riders {
		if m := &r.slots[ri]; m == own {
			*ownGot++
		} else {
			m.ch <- struct{}{}
			others++
		}
	}
	h.riders = h.riders[:0]
	h.nRiders.Store(0)
	if h == own {
		*ownGot++
	} else {
		h.ch <- struct{}{}
		others++
	}
	return others
}

// mergesWrites reports whether f's data requests go through a ring that
// merges adjacent requests (R8; block B10).
func (f *File) mergesWrites() bool {
	switch b := f.io.(type) {
	case *ringIO:
		return b.r.merge
	case *hybrid:
		return b.r.merge
	}
	return false
}
