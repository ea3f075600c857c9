package qcow2

// The values a crash may show in a sector written since the last flush.
//
// An acknowledged write that no Flush has covered may be lost in a crash,
// wholly or in part, but the promise is old or new: each byte of the
// guest view reads a value it held at some moment since the last
// completed Flush (the flushed one, or one a later write, zeroing or
// discard gave it), never one it never held: not the stale bytes of a
// reused host cluster, not the zeros of fresh space where a backing
// file's data or flushed data was, not another cluster's data. The
// sequential ops of a torture run record every value they give a sector
// (expect, before the request is sent, since a crash clone may be taken
// while it runs); verifyClone checks each byte of such a sector against
// them. A concurrent phase records every op it will run before it
// starts (expectBatch): its writes land in any order, and the check,
// byte by byte, does not depend on one. Sectors that a snapshot apply or
// a shrink may leave in between stay unchecked (touch) until the next
// flush.
//
// Byte by byte, not sector by sector: unaligned writes overlapping a
// sector, each kept or lost on its own (memdev drops unflushed writes
// independently, keeping the order of those it keeps), or racing in a
// concurrent phase, can leave a sector mixing the bytes of several
// values.

// expect records the value each sector of [off, off+n) will hold once
// the sequential op about to run has applied: apply turns w, a copy of
// the model's bytes from at (the sectors' start), into it.
func (r *trun) expect(off, n int64, apply func(w []byte, at int64)) {
	if n <= 0 {
		return
	}
	r.cmu.Lock()
	defer r.cmu.Unlock()
	at := off / crashSector * crashSector
	end := min((off+n+crashSector-1)/crashSector*crashSector, int64(len(r.model)))
	if at >= end {
		return
	}
	w := make([]byte, end-at)
	copy(w, r.model[at:end])
	apply(w, at)
	for p := at; p < end; p += crashSector {
		s := p / crashSector
		r.held[s] = append(r.held[s], w[p-at:min(p-at+crashSector, end-at)])
	}
}

// neverHeld is the first byte of got that is neither flushed's nor any
// of vals' at its position, or -1.
func neverHeld(got, flushed []byte, vals [][]byte) int {
	for i := range got {
		if got[i] == flushed[i] {
			continue
		}
		ok := false
		for _, v := range vals {
			if i < len(v) && v[i] == got[i] {
				ok = true
				break
			}
		}
		if !ok {
			return i
		}
	}
	return -1
}

// expectBatch records the values every op of a concurrent phase gives
// the bytes it writes, before any runs: the goroutines' stripes (the
// queue owner's too: the same writes, zeroings and discards), and the
// shared window's items, written twice with the same data.
func (r *trun) expectBatch(b *tbatch) {
	one := func(o top) {
		switch o.kind {
		case opWrite:
			data := make([]byte, o.n)
			fillPattern(data, o.pat)
			r.expect(o.off, o.n, func(w []byte, at int64) { copy(w[o.off-at:], data) })
		case opZero:
			r.expect(o.off, o.n, func(w []byte, at int64) { clear(w[o.off-at : o.off-at+o.n]) })
		case opDiscard:
			r.expect(o.off, o.n, func(w []byte, at int64) { r.discardIn(w, at, o.off, o.n) })
		}
	}
	for _, ops := range b.own {
		for _, o := range ops {
			one(o)
		}
	}
	for _, o := range b.shared {
		one(o)
	}
}

// discardIn applies a Discard of [off, off+n) to w, the bytes from at.
func (r *trun) discardIn(w []byte, at, off, n int64) {
	if lo, hi, ok := r.discarded(off, n); ok {
		lo, hi = max(lo, at), min(hi, at+int64(len(w)))
		if lo < hi {
			clear(w[lo-at : hi-at])
		}
	}
}
