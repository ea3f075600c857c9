package qcow2

import "sync"

// sectorLocks serialises writes of an encrypted image by the 512-byte
// sectors they touch (QEMU's request serialisation for its
// request_alignment of 512): a write of whole sectors holds its sectors
// shared, a write with a partial head or tail sector (read, decrypt,
// merge, write whole) holds its sectors exclusively, so no write into
// those sectors lands between its read and its write. Writes that share
// no sector never wait for each other (block B1).
//
// A writer takes one range at the start and releases it at the end; it
// never waits for another range while it holds one, so waiting for
// allocations in flight (Q7, Q10) cannot deadlock here.
type sectorLocks struct {
	mu   sync.Mutex
	cond sync.Cond
	held []sectorRange
}

type sectorRange struct {
	start, end int64 // sectors [start, end)
	excl       bool
}

func (l *sectorLocks) conflicts(r sectorRange) bool {
	for _, h := range l.held {
		if h.start < r.end && r.start < h.end && (h.excl || r.excl) {
			return true
		}
	}
	return false
}

// lock waits until the sectors of [off, off+n) (bytes) are free for this
// writer and holds them; unlock with the returned range.
func (l *sectorLocks) lock(off, n int64, excl bool) sectorRange {
	r := sectorRange{start: off / sectorSize, end: (off + n + sectorSize - 1) / sectorSize, excl: excl}
	l.mu.Lock()
	if l.cond.L == nil {
		l.cond.L = &l.mu
	}
	for l.conflicts(r) {
		l.cond.Wait()
	}
	l.held = append(l.held, r)
	l.mu.Unlock()
	return r
}

func (l *sectorLocks) unlock(r sectorRange) {
	l.mu.Lock()
	for i, h := range l.held {
		if h == r {
			l.held[i] = l.held[len(l.held)-1]
			l.held = l.held[:len(l.held)-1]
			break
		}
	}
	l.cond.Broadcast()
	l.mu.Unlock()
}

// holdSectors runs fn, which changes L2 entries or subcluster bits so
// that [off, off+n) reads as zeros (WriteZeroes, Discard), holding those
// sectors shared on an encrypted image: a partial-sector write in them
// (read, merge, write whole) then cannot put back, after the zeroing,
// bytes it read before it (QEMU serialises such writes against every
// overlapping request). fn must not write zero buffers itself: those go
// through writevCrypt, which takes the sectors on its own.
func (im *Image) holdSectors(off, n int64, fn func() error) error {
	ic := im.crypt
	if ic == nil {
		return fn()
	}
	r := ic.sectors.lock(off, n, false)
	defer ic.sectors.unlock(r)
	return fn()
}
