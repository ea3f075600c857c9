package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// This file follows one write into a new cluster, from the registration
// of its guest cluster to the refcount update that frees what the L2
// entry pointed at before:
//
//	allocWrite       the whole allocation, in three phases:
//	  beginAlloc     mu: register the guest cluster (Q7) and plan
//	                 (planAllocLocked: L2 table, host cluster, COW source)
//	  writeWithCOW   no lock: the data and the bytes around it (cow.go)
//	  finishAlloc    seal (Q10), then mu: link the cluster and free the
//	                 old one (commitAllocLocked), or undo the allocation
//
// Each phase takes the locks it needs and releases them before it
// returns; functions named *Locked run with mu held by their caller.

// allocation is one cluster allocation of a write, as planned under mu.
type allocation struct {
	reg  *sched.Alloc[allocState] // the guest cluster's registration (Q7)
	st   *allocState              // attached to reg; st.host is the new cluster
	goff format.GuestOff          // the guest offset written (any in the cluster)
	old  format.L2Entry           // the entry it replaces
	src  cowSource                // where the bytes around the data come from
	// fresh: the host cluster is fresh space (a hole, Q2); reuse: it is
	// the preallocated zero cluster of old (QEMU keep_old), which
	// neither an undo nor the link frees.
	fresh, reuse bool
}

// allocWrite writes n bytes of v at guest offset goff into a new cluster.
// done is false when it wrote nothing because the cluster was being
// allocated by someone else (it waited for them) or was linked
// meanwhile: the caller looks the cluster up again.
func (im *Image) allocWrite(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	p, blocker, err := im.beginAlloc(goff)
	if blocker != nil {
		blocker.Wait()
		return false, nil
	}
	if p.reg == nil {
		return err != nil, err
	}
	defer im.allocs.Release(p.reg)
	cowed, err := im.writeWithCOW(&p, v, n)
	if err == nil {
		p.st.ready.Store(true)
		if im.readyPause != nil {
			im.readyPause()
		}
	}
	return true, im.finishAlloc(&p, cowed, err)
}

// beginAlloc registers the guest cluster of goff (Q7) and plans its
// allocation under mu. It returns a blocker (to wait for without mu) when the
// cluster is registered already, and an allocation without a
// registration when there is nothing to allocate (err, or the cluster
// was linked in the meantime).
func (im *Image) beginAlloc(goff format.GuestOff) (p allocation, blocker *sched.Alloc[allocState], err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.beginAllocLocked(goff)
}

// beginAllocLocked is beginAlloc with mu held by the caller (the queue's
// allocator plans a batch under one lock: queue_alloc.go).
func (im *Image) beginAllocLocked(goff format.GuestOff) (p allocation, blocker *sched.Alloc[allocState], err error) {
	if err := im.writableLocked(); err != nil {
		// A writer that passed its lock-free check before a Close (or
		// waited out a CreateSnapshot that found the image closing):
		// planning could dirty the header of a closed image. Or before
		// a table's header update failed (Q4): it could link a new L2
		// table into an L1 table the file may not name.
		return allocation{}, nil, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return allocation{}, blocker, nil
	}
	p, err = im.planAllocLocked(goff)
	if err != nil || p.st == nil {
		im.allocs.Release(reg)
		return allocation{}, nil, err
	}
	p.reg = reg
	reg.SetState(p.st) // from here writers of the cluster see it (Q10)
	return p, nil, nil
}

// planAllocLocked looks the guest cluster of goff up again (it may have
// been linked since the caller's lock-free lookup), makes its L2 table
// writable, and takes the host cluster: the preallocated zero cluster of
// the old entry, or a new one. p.st is nil when the cluster needs no
// allocation (it is allocated with COPIED: overwrite it).
func (im *Image) planAllocLocked(goff format.GuestOff) (p allocation, err error) {
	e, err := im.entry(goff)
	if err != nil || (e.Type() == format.ClusterNormal && e.Copied()) {
		return allocation{}, err
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return allocation{}, err
	}
	// ensureL2Locked may have copied a shared table: re-read the entry.
	if e, err = im.entry(goff); err != nil {
		return allocation{}, err
	}
	p = allocation{goff: goff, old: e, src: im.cowSourceOf(e)}
	var host format.HostOff
	if e.Type() == format.ClusterZeroAlloc && e.Copied() {
		// Written in place, as an overwrite is (Q9): a hostile entry
		// must not point the zeroing and the data at metadata or far
		// past the file.
		if err := im.overlapCheckData(e.Offset()); err != nil {
			return allocation{}, im.markCorrupt(err)
		}
		host, p.reuse = e.Offset(), true
	} else {
		if host, p.fresh, err = im.allocClustersLocked(1); err != nil {
			return allocation{}, err
		}
		im.c.clustersAllocated.Add(1)
		im.noteAlloc(uint64(goff)) // prealloc-fill=auto's judge (fill_adapt.go)
	}
	p.st = newAllocState(host)
	return p, nil
}

// cowSourceOf says where the bytes around the guest data come from when
// the cluster of entry e is replaced.
func (im *Image) cowSourceOf(e format.L2Entry) cowSource {
	switch e.Type() {
	case format.ClusterUnallocated:
		if im.backing != nil {
			return cowBacking
		}
	case format.ClusterNormal:
		return cowOld
	case format.ClusterCompressed:
		return cowCompressed
	}
	return cowZero
}

// finishAlloc ends the allocation p after its data write (werr: how it
// went). Q10: it seals the allocation first, so no early writer enters
// after and those in flight are done, then commits under mu.
func (im *Image) finishAlloc(p *allocation, cowed bool, werr error) error {
	early := p.st.seal()
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.commitAllocLocked(p, cowed, werr, early)
}

// commitAllocLocked links the new cluster and frees the old one, or
// undoes the allocation when the data write failed and no early write
// put data there (early: early writes that succeeded). Either way it
// tells the early writers the outcome (Q10).
func (im *Image) commitAllocLocked(p *allocation, cowed bool, werr error, early int) error {
	if im.closed {
		// Close did not wait for this one (its caches are written
		// back): not linked, not acknowledged.
		p.st.finish(block.ErrClosed)
		return block.ErrClosed
	}
	if werr != nil && early == 0 {
		im.undoAllocLocked(p) // QEMU qcow2_alloc_cluster_abort
		p.st.finish(werr)
		return werr
	}
	lerr := im.linkLocked(p.goff, p.st.host, cowed || im.lazy)
	p.st.finish(lerr)
	if lerr != nil {
		// Nobody was told the data is there (every early writer got
		// lerr): undo the allocation, best effort (else a leak).
		im.undoAllocLocked(p)
		return lerr
	}
	// Free what the entry pointed at before (Q3: modified and dirty
	// first, then the refcount cache depends on the L2 cache), held
	// until readers that found the old entry are done (Q12).
	if !p.reuse {
		if ferr := im.freeEntryLocked(p.old, false, false); ferr != nil && werr == nil {
			werr = ferr
		}
	}
	return werr
}

// undoAllocLocked gives back the host cluster of an allocation that was
// never linked (unless it is the reused zero cluster, still referenced).
func (im *Image) undoAllocLocked(p *allocation) {
	if !p.reuse {
		im.freeClustersLocked(p.st.host, 1)
	}
}

// linkLocked points the L2 entry of goff at the new host cluster (in the
// cache), after the dependencies that make it safe on disk. flushFirst: the
// cluster's bytes around the data were written into space that may hold
// stale bytes (Q2), or with lazy refcounts nothing else orders the data
// before the link (no refcount dependency): a crash could leave the
// entry pointing past the end of the file (fresh space), or at the
// stale bytes of space that is not fresh, such as the bytes a zeroing
// replaced in the cluster it kept (a ZeroAlloc entry, reused), though
// that zeroing was flushed. Called with mu held.
func (im *Image) linkLocked(goff format.GuestOff, host format.HostOff, flushFirst bool) error {
	if im.linkFault != nil {
		if err := im.linkFault(); err != nil {
			return err
		}
	}
	if flushFirst {
		im.l2c.DependsOnFlush()
	}
	if !im.lazy {
		if err := im.l2c.SetDependency(im.rbc); err != nil { // Q1
			return err
		}
	}
	if err := im.setEntry(goff, format.MakeL2(host, true, false)); err != nil {
		return err
	}
	im.event(EvLink)
	return nil
}

// freeEntryLocked drops the reference an old L2 entry held, after the
// entry changed. synced: the data gate was synced since (Q12), so no
// request still uses the cluster; durable: the change is on the media
// already (written and flushed since). A cluster whose last reference
// this was is held (held.go) until the gate has passed, and until a
// completed flush has made the change durable (Q3): else an allocation
// could write new data into it while the old entry, on the media,
// still points at it, and a crash would show that data there.
func (im *Image) freeEntryLocked(e format.L2Entry, synced, durable bool) error {
	switch e.Type() {
	case format.ClusterNormal, format.ClusterZeroAlloc:
		if err := im.rbc.SetDependency(im.l2c); err != nil {
			return err
		}
		if synced && durable {
			return im.freeClustersLocked(e.Offset(), 1)
		}
		return im.freeHeldLocked(im.g.HostCluster(e.Offset()), !durable)
	case format.ClusterCompressed:
		if err := im.rbc.SetDependency(im.l2c); err != nil {
			return err
		}
		return im.freeCompressedLocked(e) // Q13
	}
	return nil
}
