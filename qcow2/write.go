package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// WriteAt implements io.WriterAt: n is len(p), or 0 with the error (a
// write that failed on the device may have landed in part). A write that
// does not lie wholly inside the virtual size writes nothing and fails
// with ErrOutOfRange (block.ErrRange for a negative offset): the disk
// does not grow (Truncate grows it).
func (im *Image) WriteAt(p []byte, off int64) (int, error) {
	vp := getVec()
	*vp = append(*vp, p)
	err := im.Writev(off, *vp)
	putVec(vp)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (im *Image) checkWrite(off, n int64) error {
	if off >= 0 && n >= 0 && off+n < off {
		return ErrOutOfRange // past any virtual size (int64 overflow)
	}
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	st := im.state.Load()
	switch {
	case st&stClosed != 0:
		return block.ErrClosed
	case st&stLost != 0:
		return im.lostErr
	case st&stNoWrite != 0:
		return ErrReadOnly
	case uint64(off+n) > im.vsize.Load():
		return ErrOutOfRange
	}
	return nil
}

// Writev writes bufs at guest offset off; as WriteAt, a range past the
// virtual size writes nothing and fails with ErrOutOfRange.
func (im *Image) Writev(off int64, bufs [][]byte) error {
	return im.signal(im.writev(off, bufs))
}

func (im *Image) writev(off int64, bufs [][]byte) (err error) {
	n := block.VecLen(bufs)
	tok := im.writers.enter() // Q18: before the size check
	defer im.writers.exit(tok)
	defer func() {
		// Close's wait for writers ran out before this write landed,
		// and its flush may have come first: it is not acknowledged
		// (review 46). This load comes after the write's device
		// requests completed, so if it finds the flag unset, Close's
		// store, and the flush after it, come later and cover them.
		if err == nil && im.closeUnwaited.Load() {
			err = block.ErrClosed
		}
	}()
	if err := im.checkWrite(off, n); err != nil || n == 0 {
		// Nothing to write: nothing allocated, linked or marked (an
		// extended-L2 range of no bytes would mark every subcluster).
		return err
	}
	im.c.guestWrites.Add(1)
	im.c.guestBytesWritten.Add(n)
	im.markDirty(off, n)       // Q22
	defer im.markDirty(off, n) // Q22: and again once done (a bitmap cleared, added or enabled meanwhile)
	if im.crypt != nil {
		return im.writevCrypt(off, bufs, n)
	}
	cs := int64(im.g.ClusterSize)
	if n <= cs-off%cs {
		return im.writeCluster(guestOff(off), bufs, n)
	}
	return im.writeClusters(off, bufs, n)
}

// writeClusters is the loop of Writev and of encrypted writes: n bytes
// of bufs at off, one cluster at a time, or whole clusters that all need
// new ones as a run (allocRun).
func (im *Image) writeClusters(off int64, bufs [][]byte, n int64) error {
	cs := int64(im.g.ClusterSize)
	vp := getVec()
	defer putVec(vp)
	run := im.runAllowed()
	for done := int64(0); done < n; {
		pos := off + done
		if run && pos%cs == 0 && n-done >= 2*cs && im.runWorthTrying(guestOff(pos)) {
			// Whole clusters that need new ones: allocated as a run
			// (allocrun.go).
			k, err := im.allocRun(guestOff(pos), bufs, done, (n-done)/cs)
			if err != nil {
				return err
			}
			if k > 0 {
				done += k * cs
				continue
			}
		}
		chunk := min(cs-pos%cs, n-done)
		*vp = sliceVec((*vp)[:0], bufs, done, chunk)
		if err := im.writeCluster(guestOff(pos), *vp, chunk); err != nil {
			return err
		}
		done += chunk
	}
	return nil
}

// writeCluster writes n bytes of v at guest offset goff, all inside one
// cluster, the first of three ways that applies: into the cluster while
// its allocation is in flight (early, Q10, or after waiting for it, Q7),
// in place (overwrite: no image-wide lock, the lookup is lock-free and
// the data goes straight to the host cluster), or into a new cluster
// (allocWrite). A way that finds the cluster changed under it reports
// done=false, and the loop looks again.
func (im *Image) writeCluster(goff format.GuestOff, v [][]byte, n int64) error {
	if im.df.ext {
		return im.dfWriteCluster(goff, v, n) // DF4
	}
	gc := im.g.GuestCluster(goff) // what ClusterLocks registers
	waited := false
	for {
		if im.state.Load()&stClosed != 0 {
			return block.ErrClosed
		}
		if blocker, _ := im.allocs.Conflict(gc, 1); blocker != nil {
			if st := blocker.State(); st.acceptsEarly() {
				blocker.Forget()
				if done, err := im.earlyWrite(st, goff, v); done {
					return err
				}
				continue
			}
			if !waited {
				im.c.allocWaits.Add(1)
				waited = true
			}
			blocker.Wait()
			continue
		}
		if im.g.ExtendedL2 {
			if done, err := im.xwriteCluster(goff, v, n); done {
				return err
			}
			continue
		}
		if done, err := im.overwrite(goff, v); done {
			return err
		}
		if done, err := im.allocWrite(goff, v, n); done {
			return err
		}
	}
}

// overwrite writes into the cluster of goff if it is allocated with
// refcount 1 (COPIED); done is false when it is not and the caller must
// allocate. The lookup and the write happen inside the data gate, so a
// discard never frees the cluster under the write (Q12). The cached
// overlap check (Q9) keeps a hostile or damaged L2 entry from pointing
// our write at metadata or far past the file.
func (im *Image) overwrite(goff format.GuestOff, v [][]byte) (done bool, err error) {
	tok := im.gate.enter()
	e, err := im.entry(goff)
	if err != nil || e.Type() != format.ClusterNormal || !e.Copied() {
		im.gate.exit(tok)
		return err != nil, err
	}
	if im.pausedForSnapshot(tok) {
		return false, nil
	}
	if err := im.overlapCheckData(e.Offset()); err != nil {
		im.gate.exit(tok)
		im.mu.Lock()
		err = im.markCorrupt(err)
		im.mu.Unlock()
		return true, err
	}
	err = im.writeHost(im.g.HostFor(e.Offset(), goff), goff, v)
	im.gate.exit(tok)
	return true, err
}
