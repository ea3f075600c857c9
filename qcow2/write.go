package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// WriteAt implements io.WriterAt.
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
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	st := im.state.Load()
	switch {
	case st&stClosed != 0:
		return block.ErrClosed
	case st&stNoWrite != 0:
		return ErrReadOnly
	case uint64(off+n) > im.vsize.Load():
		return ErrOutOfRange
	}
	return nil
}

// Writev writes bufs at guest offset off.
func (im *Image) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := im.checkWrite(off, n); err != nil {
		return err
	}
	im.c.guestWrites.Add(1)
	im.c.guestBytesWritten.Add(n)
	cs := int64(im.g.ClusterSize)
	done := int64(0)
	if n <= cs-off%cs {
		return im.writeCluster(uint64(off), bufs, n)
	}
	vp := getVec()
	defer putVec(vp)
	for done < n {
		pos := off + done
		chunk := min(cs-pos%cs, n-done)
		*vp = sliceVec((*vp)[:0], bufs, done, chunk)
		if err := im.writeCluster(uint64(pos), *vp, chunk); err != nil {
			return err
		}
		done += chunk
	}
	return nil
}

// cowSource says where the bytes around guest data in a new cluster
// come from.
type cowSource uint8

const (
	cowZero    cowSource = iota // reads as zeros
	cowBacking                  // backing file (or zeros past its end)
	cowOld                      // the old host cluster (shared)
	cowCompressed
)

// writeCluster writes n bytes of v at guest offset goff, all inside one
// cluster. The overwrite path takes no image-wide lock: the lookup is
// lock-free and the data goes straight to the host cluster.
func (im *Image) writeCluster(goff uint64, v [][]byte, n int64) error {
	g := &im.g
	gc := goff >> g.ClusterBits
	waited := false
	for {
		if im.state.Load()&stClosed != 0 {
			return block.ErrClosed
		}
		// Q7: a cluster under allocation is either written early (Q10)
		// or waited for.
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
		if done, err := im.overwrite(gc, goff, v); done {
			return err
		}
		im.mu.Lock()
		a, _, blocker := im.allocs.TryAcquire(gc, 1)
		if a == nil {
			im.mu.Unlock()
			blocker.Wait()
			continue
		}
		// Registered: look again, the cluster may have been linked in
		// the meantime.
		e, err := im.entry(gc)
		if err != nil {
			im.allocs.Release(a)
			im.mu.Unlock()
			return err
		}
		if e.Type() == format.ClusterNormal && e.Copied() {
			im.allocs.Release(a)
			im.mu.Unlock()
			continue // overwrite, without the lock
		}
		return im.allocWrite(a, gc, goff, e, v, n) // unlocks mu
	}
}

// overwrite writes into the cluster of gc if it is allocated with
// refcount 1 (COPIED); done is false when it is not and the caller must
// allocate. The lookup and the write happen inside the write gate, so a
// discard never frees the cluster under the write (Q12). The cached
// overlap check (Q9) keeps a hostile or damaged L2 entry from pointing
// our write at metadata or far past the file.
func (im *Image) overwrite(gc, goff uint64, v [][]byte) (done bool, err error) {
	tok := im.gate.enter()
	e, err := im.entry(gc)
	if err != nil || e.Type() != format.ClusterNormal || !e.Copied() {
		im.gate.exit(tok)
		return err != nil, err
	}
	if err := im.overlapCheckData(uint64(e.Offset())); err != nil {
		im.gate.exit(tok)
		im.mu.Lock()
		err = im.markCorrupt(err)
		im.mu.Unlock()
		return true, err
	}
	err = im.dev.Writev(int64(uint64(e.Offset())+im.g.InCluster(goff)), v)
	im.gate.exit(tok)
	return true, err
}

// allocWrite allocates a cluster for gc (old entry e), writes the guest
// data with whatever COW it needs, and links the cluster. Called with mu
// held and the cluster's allocation registered; returns with mu released
// and the registration dropped.
func (im *Image) allocWrite(a *sched.Alloc[allocState], gc, goff uint64, e format.L2Entry, v [][]byte, n int64) (err error) {
	defer im.allocs.Release(a)
	if err := im.ensureL2(gc); err != nil {
		im.mu.Unlock()
		return err
	}
	// ensureL2 may have copied a shared table: re-read the entry.
	if e, err = im.entry(gc); err != nil {
		im.mu.Unlock()
		return err
	}
	var host uint64
	var fresh, reuse bool
	if e.Type() == format.ClusterZeroAlloc && e.Copied() {
		// A preallocated zero cluster: keep it (QEMU keep_old).
		host, reuse = uint64(e.Offset()), true
	} else {
		host, fresh, err = im.allocClusters(1)
		if err != nil {
			im.mu.Unlock()
			return err
		}
		im.c.clustersAllocated.Add(1)
	}
	src := cowZero
	switch e.Type() {
	case format.ClusterUnallocated:
		if im.backing != nil {
			src = cowBacking
		}
	case format.ClusterNormal:
		src = cowOld
	case format.ClusterCompressed:
		src = cowCompressed
	}
	st := newAllocState(host)
	a.SetState(st)
	im.mu.Unlock()

	cowed, err := im.writeWithCOW(st, fresh, goff, e, src, v, n)
	if err == nil {
		st.ready.Store(true)
	}
	// Q10: no early writer enters after this, and those in flight are
	// done. If our write failed, undo the allocation unless early writers
	// put data there: then it is linked all the same.
	early := st.seal()
	im.mu.Lock()
	defer im.mu.Unlock()
	if err != nil && early == 0 {
		if !reuse {
			im.freeClusters(host, 1) // QEMU qcow2_alloc_cluster_abort
		}
		st.finish(err)
		return err
	}
	lerr := im.link(gc, host, cowed || (fresh && im.lazy))
	st.finish(lerr)
	if lerr != nil {
		// Nobody was told the data is there (every early writer got
		// lerr): undo the allocation, best effort (else a leak).
		if !reuse {
			im.freeClusters(host, 1)
		}
		return lerr
	}
	// Free what the entry pointed at before (Q3: modified and dirty
	// first, then the refcount cache depends on the L2 cache).
	if !reuse {
		if ferr := im.freeEntry(e); ferr != nil && err == nil {
			err = ferr
		}
	}
	return err
}

// link points the L2 entry of gc at the new host cluster (in the cache),
// after the dependencies that make it safe on disk. flushFirst: the
// cluster's bytes around the data were written into space that may hold
// stale bytes (Q2), or with lazy refcounts nothing else orders the data
// (which may extend the file) before the link, so a crash could leave
// L2 entries pointing past the end of the file. Called with mu held.
func (im *Image) link(gc, host uint64, flushFirst bool) error {
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
	if err := im.setEntry(gc, format.MakeL2(format.HostOff(host), true, false)); err != nil {
		return err
	}
	im.event(EvLink)
	return nil
}

// freeEntry drops the reference an old L2 entry held.
func (im *Image) freeEntry(e format.L2Entry) error {
	switch e.Type() {
	case format.ClusterNormal, format.ClusterZeroAlloc:
		if err := im.rbc.SetDependency(im.l2c); err != nil {
			return err
		}
		return im.freeClusters(uint64(e.Offset()), 1)
	case format.ClusterCompressed:
		if err := im.rbc.SetDependency(im.l2c); err != nil {
			return err
		}
		d := e.DecodeCompressed(&im.g)
		first := uint64(d.Off) >> im.g.ClusterBits
		last := (uint64(d.Off) + d.Size - 1) >> im.g.ClusterBits
		for c := first; c <= last; c++ {
			if err := im.freeClusters(c<<im.g.ClusterBits, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeWithCOW writes the guest data into the new host cluster and fills
// the rest of the cluster from src. It reports whether it wrote bytes
// around the data into non-fresh space (Q2). mu is not held.
func (im *Image) writeWithCOW(st *allocState, fresh bool, goff uint64, old format.L2Entry, src cowSource, v [][]byte, n int64) (bool, error) {
	host := st.host
	g := &im.g
	cs := g.ClusterSize
	in := g.InCluster(goff)
	headLen, tailLen := in, cs-in-uint64(n)
	if headLen == 0 && tailLen == 0 {
		return false, im.dev.Writev(int64(host), v)
	}
	cstart := goff - in
	zero := src == cowZero || (src == cowBacking && im.backingZero(cstart, in, goff+uint64(n), tailLen))
	if zero {
		if im.prealloc {
			if fresh {
				// A hole past the high-water mark already reads as
				// zeros: write only the guest data, and let other
				// writers into the cluster right away (Q10).
				im.c.freshSkips.Add(1)
				st.ready.Store(true)
				return false, im.dev.Writev(int64(host+in), v)
			}
			// The seed: one efficient zeroing of the whole cluster,
			// ordered before the data (Q5), instead of zero buffers.
			err := im.zeroThenWrite(host, cs, host+in, v)
			if err == nil {
				im.c.fallocates.Add(1)
				return true, nil
			}
			if !errors.Is(err, block.ErrNotSupported) && !errors.Is(err, block.ErrBusy) {
				return false, err
			}
			im.c.zeroingRefused.Add(1)
		}
		// Zero buffers merged with the data in one vectored write.
		zb := block.ZeroBuf()
		vec := make([][]byte, 0, len(v)+4)
		vec = appendZeros(vec, zb, headLen)
		vec = append(vec, v...)
		vec = appendZeros(vec, zb, tailLen)
		im.c.zeroPadBytes.Add(int64(headLen + tailLen))
		return !fresh, im.dev.Writev(int64(host), vec)
	}
	// Copy-on-write: read the head and tail, write them with the data in
	// one vector (QEMU ee22a9d869).
	buf := block.AlignedBuf(int(cs), im.memAlign)
	if err := im.readCOW(buf, cstart, old, src, headLen, tailLen); err != nil {
		return false, err
	}
	vec := make([][]byte, 0, len(v)+2)
	if headLen > 0 {
		vec = append(vec, buf[:headLen])
	}
	vec = append(vec, v...)
	if tailLen > 0 {
		vec = append(vec, buf[cs-tailLen:])
	}
	im.c.cowBytes.Add(int64(headLen + tailLen))
	return true, im.dev.Writev(int64(host), vec)
}

func appendZeros(vec [][]byte, zb []byte, n uint64) [][]byte {
	for n > 0 {
		k := min(n, uint64(len(zb)))
		vec = append(vec, zb[:k])
		n -= k
	}
	return vec
}

// zeroThenWrite zeroes [zoff, zoff+zn) with Allocate and then writes v at
// woff, linked on devices that can (Q5).
func (im *Image) zeroThenWrite(zoff, zn, woff uint64, v [][]byte) error {
	if im.dcap.ZeroFlags&block.Allocate == 0 {
		return block.ErrNotSupported
	}
	if zw, ok := im.dev.(block.ZeroWriter); ok {
		return zw.ZeroThenWritev(int64(zoff), int64(zn), block.Allocate, int64(woff), v)
	}
	if err := im.dev.WriteZeroes(int64(zoff), int64(zn), block.Allocate); err != nil {
		return err
	}
	return im.dev.Writev(int64(woff), v)
}

// backingZero reports whether the COW areas [cstart, cstart+head) and
// [tailStart, tailStart+tail) read as zeros in the backing file (false
// negatives are fine, false positives would corrupt data).
func (im *Image) backingZero(cstart, head, tailStart, tail uint64) bool {
	z := func(off, n uint64) bool {
		if n == 0 || int64(off) >= im.bsize {
			return true
		}
		if im.bzero != nil {
			return im.bzero.IsZeroFast(int64(off), int64(n))
		}
		return false
	}
	return z(cstart, head) && z(tailStart, tail)
}

// readCOW fills buf (one cluster) with the old contents of the cluster
// starting at guest offset cstart, at least the head and tail parts.
func (im *Image) readCOW(buf []byte, cstart uint64, old format.L2Entry, src cowSource, head, tail uint64) error {
	cs := uint64(len(buf))
	switch src {
	case cowZero:
		clear(buf)
	case cowBacking:
		// One read covers both areas when the gap is small (QEMU reads
		// head and tail together if the gap is <= 16 KiB).
		if cs-head-tail <= 16<<10 {
			return im.readBacking(buf, cstart)
		}
		if head > 0 {
			if err := im.readBacking(buf[:head], cstart); err != nil {
				return err
			}
		}
		if tail > 0 {
			if err := im.readBacking(buf[cs-tail:], cstart+cs-tail); err != nil {
				return err
			}
		}
	case cowOld:
		return block.ReadAt(im.dev, buf, int64(old.Offset()))
	case cowCompressed:
		return im.readCompressed(buf, old)
	default:
		return fmt.Errorf("qcow2: bad COW source %d", src)
	}
	return nil
}

// readBacking reads guest bytes from the backing file (zeros past its end
// or without one).
func (im *Image) readBacking(p []byte, off uint64) error {
	if im.backing == nil || int64(off) >= im.bsize {
		clear(p)
		return nil
	}
	n := min(uint64(len(p)), uint64(im.bsize)-off)
	if err := block.ReadAt(im.backing, p[:n], int64(off)); err != nil {
		return err
	}
	clear(p[n:])
	return nil
}
