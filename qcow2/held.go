package qcow2

// Held clusters: host clusters whose refcount fell to 0 but that
// findFree does not give out yet, because something may still reach
// them through an entry that no longer points at them:
//   - a request that found the old entry lock-free and is still in the
//     data gate (Q12), when the freer could not wait for the gate (it
//     holds mu, as an allocation's commit does);
//   - after a crash, the old L2 entry (normal, preallocated zero or
//     compressed), until a flush has made its change durable (Q3, Q13).
// The clusters stay free on the media all along (refcount 0): a crash
// or a Close only ends the hold.

// heldCluster is why a held cluster is still held.
type heldCluster struct {
	ticket  uint64 // the data gate's ticket, taken after the entry changed
	flushed bool   // no flush is needed, or one has completed since (Q3, Q13)
}

// holdLocked holds host cluster c, whose refcount just fell to 0 after
// its entry changed; needFlush: that change may not be durable yet (Q3,
// Q13).
func (im *Image) holdLocked(c uint64, needFlush bool) {
	if im.held == nil {
		im.held = make(map[uint64]heldCluster)
	}
	im.held[c] = heldCluster{ticket: im.gate.ticket(), flushed: !needFlush}
}

// isHeld reports whether findFree must skip host cluster c.
func (im *Image) isHeld(c uint64) bool {
	_, ok := im.held[c]
	return ok
}

// heldIn reports whether a host cluster in [from, to) is held.
func (im *Image) heldIn(from, to uint64) bool {
	for c := range im.held {
		if c >= from && c < to {
			return true
		}
	}
	return false
}

// freeHeldLocked drops one reference to host cluster c, whose entry the
// caller has changed; if that was the last one, c is held until the
// data gate has passed (Q12), and with needFlush (the change may not be
// durable yet) until a flush has completed too (Q3, Q13).
func (im *Image) freeHeldLocked(c uint64, needFlush bool) error {
	if err := im.updateRefcountLocked(c, -1); err != nil {
		return err
	}
	rc, err := im.refcount(c)
	if err != nil {
		return err
	}
	if rc == 0 {
		im.holdLocked(c, needFlush)
	}
	return nil
}

// releaseHeldLocked gives back to first-fit the held clusters whose
// hold is over; flushed: a device flush has just completed, after every
// hold taken so far (mu is held across both).
func (im *Image) releaseHeldLocked(flushed bool) {
	if len(im.held) == 0 {
		return
	}
	im.gate.poll()
	for c, h := range im.held {
		h.flushed = h.flushed || flushed
		if h.flushed && im.gate.passed(h.ticket) {
			delete(im.held, c)
			im.freeIdx = min(im.freeIdx, c)
			continue
		}
		im.held[c] = h
	}
}
