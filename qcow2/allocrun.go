package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// This file allocates a run of whole clusters for one large write (Q7,
// Q10): a write that covers several clusters, none of them allocated
// with COPIED, gets its new clusters planned under one hold of mu and
// its data sent in one device write per contiguous host range, then
// every cluster linked under one hold of mu, as the queue's allocator
// does for a batch (Q16). One allocation at a time (allocWrite) made a
// 2 MiB write 32 device round trips and 64 holds of mu: qimg convert
// into a 64 KiB-cluster image took 1.7x qemu-img's time on tmpfs.
//
// Each cluster is still an allocation of its own (its registration,
// host cluster, seal, link and undo are allocWrite's), so every rule of
// a single allocation holds for each; the run only shares the lock
// holds and the device write. Nothing here waits while it holds
// registrations, except for its own device write and mu: a cluster
// under someone else's allocation ends the run before it (the caller's
// loop waits for it with nothing held).

// Limits of one run: registrations held at once, and bytes in one run.
// The bytes bound how long a run holds its clusters: a Close waits for
// allocations in flight only so long (lockQuiet), and a run it stops
// waiting for is leaked when it links (commitAllocLocked finds the image
// closed); at 8 MiB a slow device (2 MB/s) outlasted it, and a Close
// during a long write left a run's clusters leaked (found in review).
// 2 MiB is qimg convert's chunk.
const (
	maxRunClusters = 512
	maxRunBytes    = 2 << 20
)

// runAllowed reports whether writes into this image may take the run
// path: plain clusters whose data is written as it is. Encrypted writes
// (their own buffers and IVs), extended L2 (subcluster bitmaps) and an
// external data file (DF4: its own write path) allocate one cluster at
// a time.
func (im *Image) runAllowed() bool {
	return im.crypt == nil && !im.g.ExtendedL2 && !im.df.ext
}

// runWorthTrying reports whether the cluster at goff, as far as the
// cached L2 slice tells (peekEntry: no load), needs a new cluster. An
// overwrite, or a slice not cached, takes the one-cluster path, which
// looks it up (and loads it) without mu.
func (im *Image) runWorthTrying(goff format.GuestOff) bool {
	e, ok := im.peekEntry(goff)
	return ok && !(e.Type() == format.ClusterNormal && e.Copied())
}

// allocRun writes bufs[done:done+k*cs) (k whole clusters, k >= 2) at
// guest offset goff, cluster aligned, into new clusters, as many of
// them as it can plan in one go (at least one, or none). It reports how
// many clusters it wrote; 0 with a nil error means the first cluster
// could not be planned here (under another allocation, or linked
// meanwhile): the caller writes it the usual way. A failure is the
// first error of the data writes or the links, or the planning error of
// the cluster after the run (allocWrite's too: an error may have changed
// the image, a corrupt entry marking it read-only, so it is not left for
// the one-cluster path to meet again); every cluster whose write failed
// is undone, as allocWrite undoes one.
func (im *Image) allocRun(goff format.GuestOff, bufs [][]byte, done int64, k int64) (int64, error) {
	cs := int64(im.g.ClusterSize)
	k = min(k, maxRunClusters, max(1, maxRunBytes/cs))
	run := make([]allocation, 0, k)

	// Plan: register and plan each cluster (Q7) until one cannot be.
	var planErr error
	im.mu.Lock()
	for i := int64(0); i < k; i++ {
		p, blocker, err := im.beginAllocLocked(goff + format.GuestOff(i*cs))
		if blocker != nil {
			blocker.Forget()
			break // the one-cluster path waits for it
		}
		if err != nil || p.reg == nil {
			planErr = err // nil: linked meanwhile, an overwrite
			break
		}
		run = append(run, p)
	}
	im.mu.Unlock()
	if len(run) == 0 {
		return 0, planErr
	}

	// Write: the data of each contiguous range of host clusters in one
	// request. A range's failure is each of its clusters'; the ranges
	// after it are not written, and fail with it.
	werrs := make([]error, len(run))
	var firstErr error
	vec := getVec()
	for i := 0; i < len(run); {
		j := i + 1
		for j < len(run) && run[j].st.host == run[j-1].st.host+format.HostOff(cs) {
			j++
		}
		if firstErr == nil && im.state.Load()&stClosed != 0 {
			firstErr = block.ErrClosed // Close is waiting: write no more
		}
		if firstErr == nil {
			*vec = sliceVec((*vec)[:0], bufs, done+int64(i)*cs, int64(j-i)*cs)
			firstErr = im.dev.Writev(int64(run[i].st.host), *vec)
		}
		for x := i; x < j; x++ {
			werrs[x] = firstErr
		}
		i = j
	}
	putVec(vec)

	// Link: ready (the whole cluster is the data: Q10), seal, then every
	// cluster committed under one hold of mu, as allocWrite's
	// finishAlloc commits one.
	for i := range run {
		if werrs[i] == nil {
			run[i].st.ready.Store(true)
		}
	}
	if im.readyPause != nil {
		im.readyPause()
	}
	early := make([]int, len(run))
	for i := range run {
		early[i] = run[i].st.seal()
	}
	err := firstErr
	im.mu.Lock()
	for i := range run {
		if cerr := im.commitAllocLocked(&run[i], false, werrs[i], early[i]); cerr != nil && err == nil {
			err = cerr
		}
	}
	im.mu.Unlock()
	fresh := int64(0) // newly allocated (not a reused zero cluster: ClustersAllocated's)
	for i := range run {
		im.allocs.Release(run[i].reg)
		if !run[i].reuse {
			fresh++
		}
	}
	if err == nil {
		err = planErr
	}
	if err != nil {
		return 0, err
	}
	im.c.runClusters.Add(fresh)
	return int64(len(run)), nil
}
