package qcow2

import (
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/invariants"
	"github.com/qring/qring/qcow2/format"
)

// This file owns host space: where in the image file new clusters may
// go, which of them are fresh (read as zeros without being written), and
// the space reserved ahead of allocation. doc.go states the rules
// (SP1-SP4); every allocator (data clusters, L2 tables, refcount blocks, a
// new refcount table, a new L1 table) takes host space through
// takeSpace, and nothing else moves these boundaries.

// hostSpace holds the four boundaries of the file's space, in order:
//
//	hwm <= fill frontier <= fill limit <= reserved (when filling)
//
// hwm is the high-water mark: every byte below it may hold data or
// metadata; every byte at or past it was never handed out since open and
// reads as zeros (SP2). reserved is the end of the space reserved ahead
// with efficient zeroing (it may lie below hwm after a reservation
// failed or before the first one). The filler (fill.go) keeps the fill
// frontier and limit.
type hostSpace struct {
	hwm      atomic.Uint64 // written under Image.mu, read lock-free
	reserved uint64        // under Image.mu
	// ahead/align: the reserve-ahead chunk (0: no reserve) and its
	// alignment. ahead drops to 0 when the device refuses a reservation.
	ahead, align int64
	fill         filler
	// slackLo, slackHi: the clusters [slackLo, slackHi) past the end of
	// the file at open that the mark starts past only because a table
	// lies there (open.go fileLimit.used). For Check, as for QEMU's, a
	// reference to one the file has not grown over since lies past the
	// end of the file (a corruption), though it is below the mark.
	slackLo, slackHi uint64
}

// mark is the high-water mark as a host offset (read lock-free).
func (s *hostSpace) mark() format.HostOff { return format.HostOff(s.hwm.Load()) }

// initSpace sets the boundaries at open from the file size, or the end
// of a table past it (open.go fileLimit.used; SP2), as fsize (the image is
// not shared yet). A file that ends inside a cluster (a torn write that
// extended it) has its high-water mark rounded up: the straddling
// cluster may be handed out, so it is below the mark and never zeroed
// by a reservation (SP1). The reserve starts at the mark.
func (im *Image) initSpace(fsize uint64) {
	cs := im.g.ClusterSize
	hwm := (fsize + cs - 1) &^ (cs - 1)
	im.space.hwm.Store(hwm)
	im.space.slackLo, im.space.slackHi = 0, 0
	im.space.reserved = hwm
	im.initFill(im.pinfo.Fill)
}

// takeSpace is the one way to use host space: the caller (with mu held)
// is about to place clusters, data or metadata, at [off, end), found
// free by the refcounts. It waits for fill writes in flight over the
// range and keeps the filler out of it (Q11), raises the high-water mark
// past it, reserves space ahead when the range is new, and reports
// whether the range is fresh: never handed out since open and inside the
// reserve, so it reads as zeros and writing it does not extend the file
// (Q2).
func (im *Image) takeSpace(o, e format.HostOff) (fresh bool) {
	s := &im.space
	off, end := uint64(o), uint64(e) // the boundaries are plain file positions
	im.claimFill(off, end)
	old := s.hwm.Load()
	if end > old {
		s.hwm.Store(end)
		// Not while the fill judge pads on RAM (fill_adapt.go).
		if s.ahead > 0 && !im.padFresh() {
			im.reserveAhead(old, end+im.fillLead())
		}
	}
	return off >= old && end <= s.reserved
}

// reserveAhead makes sure the space up to end is reserved, growing the
// reservation by a large aligned chunk with one efficient zeroing
// request (QEMU's preallocate filter). New clusters then land in
// zeroed, unwritten extents inside the file: they need no per-cluster
// zeroing (still fresh) and their writes do not extend the file. The
// zeroing starts at or past from, the high-water mark before the range
// being taken (SP1): space below it may hold data or metadata, whatever
// the reserve's end says, while the range being taken past it is
// nobody's yet (takeSpace's caller writes it after). A refusal disables
// reserving; it is an optimisation only. Called with mu held.
//
// The reserve proper starts where it always did, at the high-water mark
// (past the range being taken) rounded up to prealloc-align (1 MiB):
// the range being taken and the clusters up to that boundary stay holes
// in the file, which the allocator hands out first. On a nearly full
// file system a reserve that zeroed only from the boundary took the last
// free space and the writes into those holes then failed with ENOSPC
// (qimg commit into a small base on a nearly full ext4, where qemu-img
// commit succeeds). So the zeroing asks for the holes' space too, from
// the old mark rounded up only to the device's zeroing alignment, and
// gives it back to the file system (a hole punched) at once: the
// reserve succeeds only if it leaves room for the writes below it.
//
// Why not keep the holes zeroed (unwritten extents), as QEMU's
// preallocate filter does with the range it writes: a new cluster there
// that gets only part of a cluster's data (a fresh skip) leaves the rest
// unwritten, and unwritten extents read back through the page cache
// (qimg's open reads the first 2 MiB of the file) turn into data for
// SEEK_DATA, so qemu-img map reports as data what it reports as zero in
// QEMU's own image (whose unwritten extents its reads seldom touch):
// TestZero_SharedClusterKeepsOffsetMatchesQemu. A hole reads as zero
// whatever is cached; with the give-back the file's layout is the one
// it had without it.
func (im *Image) reserveAhead(from, end uint64) {
	s := &im.space
	if end <= s.reserved {
		return
	}
	za := uint64(max(im.dcap.Align, im.dcap.ZeroAlign, 1))
	a := max(uint64(s.align), za)
	start := (max(s.reserved, from) + za - 1) / za * za
	// Grow geometrically up to the configured chunk, so small images do
	// not reserve far more than they use.
	chunk := min(uint64(s.ahead), max(4<<20, s.reserved))
	newEnd := (end + chunk + a - 1) / a * a
	if invariants.Enabled {
		if err := invariants.Assertf(start >= from, "reserve zeroing from %d below the high-water mark %d (SP1)", start, from); err != nil {
			s.ahead = 0
			return
		}
	}
	// The holes below the reserve proper (the range being taken, the
	// rounding up to prealloc-align) are given back after the zeroing.
	holes := min((max(s.reserved, s.hwm.Load())+a-1)/a*a, newEnd) / za * za
	if newEnd > start {
		if err := im.dev.WriteZeroes(int64(start), int64(newEnd-start), block.Allocate); err != nil {
			s.ahead = 0
			// A reserve that failed part-way may have kept what it got
			// (ext4's ZERO_RANGE out of space keeps the blocks it took,
			// the file grown over them). What it kept past the old
			// reserve or the range being taken (whichever ends
			// further) is given back at once: the file system is
			// (nearly) full, and kept, that space was handed out only
			// as the image grew into it, while any hole below it (a
			// part the zeroing did not reach before it failed) needed
			// blocks of its own: when the zeroing started at the
			// prealloc-align boundary past the range being taken,
			// every allocating write failed with ENOSPC until Close
			// (review: a full ext4 kept 6 MiB past the image that no
			// write could use). The range being taken keeps what the
			// zeroing got there: its write comes next. Nothing lies
			// past the mark (SP1, SP2), nor is in flight there: fills
			// stop at the old reserve.
			keep := max(s.reserved, s.hwm.Load())
			if sz, err := im.dev.Size(); err == nil && uint64(sz) > keep {
				if im.dev.Truncate(int64(keep)) != nil {
					// Kept, then: reserved, handed out as it comes
					// and given back at Close (SP3, trimReserved).
					// Past the mark it reads as zeros (SP2).
					if sz, err := im.dev.Size(); err == nil && uint64(sz) > keep {
						s.reserved = uint64(sz)
					}
				}
			}
			return
		}
		if holes > start && im.dcap.ZeroFlags&block.MayUnmap != 0 {
			// Nobody has written there yet (SP1 as for the zeroing):
			// a failed punch leaves zeros, and costs only the space.
			_ = im.dev.WriteZeroes(int64(start), int64(holes-start), block.MayUnmap)
		}
	}
	s.reserved = newEnd
	im.c.reservations.Add(1)
	im.event(EvReserve)
	im.fillReserved(newEnd)
}

// trimReserved gives back reserved space past the high-water mark at
// close (SP3). The filler is stopped first (Close: stopFill, Q11).
func (im *Image) trimReserved() error {
	s := &im.space
	end := s.hwm.Load()
	if s.reserved <= end {
		return nil
	}
	sz, err := im.dev.Size()
	if err != nil || uint64(sz) <= end {
		return err
	}
	if err := im.dev.Truncate(int64(end)); err != nil {
		return err
	}
	s.reserved = end
	return im.dev.Flush()
}
