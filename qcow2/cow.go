package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// This file fills a new cluster: the guest data and, around it, the
// bytes the cluster held before (copy-on-write from the old cluster, a
// compressed one or the backing file) or zeros.

// cowSource says where the bytes around guest data in a new cluster
// come from.
type cowSource uint8

const (
	cowZero    cowSource = iota // reads as zeros
	cowBacking                  // backing file (or zeros past its end)
	cowOld                      // the old host cluster (shared)
	cowCompressed
)

// writeWithCOW writes the guest data into the new host cluster of p and
// fills the rest of the cluster from p.src. It reports whether it wrote
// bytes around the data into non-fresh space (Q2). In fresh space, where
// the bytes around the data are final already, it marks the allocation
// ready for early writes (Q10) before its own write (if the data's range
// read as zeros too). mu is not held.
func (im *Image) writeWithCOW(p *allocation, v [][]byte, n int64) (bool, error) {
	return im.writeWithCOWZero(p, v, n, im.zeroAround(p, n))
}

// writeWithCOWZero is writeWithCOW with zeroAround(p, n) known.
func (im *Image) writeWithCOWZero(p *allocation, v [][]byte, n int64, zero bool) (bool, error) {
	if w, ok := im.plainFill(p, v, n, zero, false); ok {
		return w.cowed, im.dev.Writev(w.off, w.vec)
	}
	if im.crypt != nil {
		return im.writeWithCOWCrypt(p, v, n)
	}
	goff, old, src := p.goff, p.old, p.src
	host := p.st.host
	g := &im.g
	cs := g.ClusterSize
	in := g.InCluster(goff)
	headLen, tailLen := in, cs-in-uint64(n)
	cstart := goff - format.GuestOff(in)
	if zero {
		// Only the seed's way is left (plainFill took the others): one
		// efficient zeroing of the whole cluster, ordered before the
		// data (Q5), instead of zero buffers.
		if done, err := im.zeroThenWrite(host, cs, g.HostFor(host, goff), v); done {
			return err == nil, err
		}
		w, ok := im.plainFill(p, v, n, true, true)
		if !ok {
			return false, fmt.Errorf("qcow2: no zero-buffer fill for a cluster at %#x", host)
		}
		return w.cowed, im.dev.Writev(w.off, w.vec)
	}
	// Copy-on-write: read the head and tail, write them with the data in
	// one vector (QEMU ee22a9d869).
	vec, err := im.cowVec(cstart, old, src, headLen, tailLen, v)
	if err != nil {
		return false, err
	}
	return true, im.dev.Writev(int64(host), vec)
}

// cowVec reads the head and tail of the cluster at cstart from src
// (readCOW) and returns the vector that writes the cluster whole: them
// around v.
func (im *Image) cowVec(cstart format.GuestOff, old format.L2Entry, src cowSource, headLen, tailLen uint64, v [][]byte) ([][]byte, error) {
	cs := im.g.ClusterSize
	buf := block.AlignedBuf(int(cs), im.memAlign)
	if err := im.readCOW(buf, cstart, old, src, headLen, tailLen); err != nil {
		return nil, err
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
	return vec, nil
}

// fillWrite is one vectored write that fills a new cluster: the guest
// data, alone or with zero buffers around it.
type fillWrite struct {
	off   int64
	vec   [][]byte
	cowed bool // bytes around the data go into non-fresh space (Q2)
}

// zeroAround reports whether the bytes of p's new cluster around the n
// guest bytes read as zeros.
func (im *Image) zeroAround(p *allocation, n int64) bool {
	in := im.g.InCluster(p.goff)
	cstart := p.goff - format.GuestOff(in)
	return p.src == cowZero || (p.src == cowBacking &&
		im.backingZero(cstart, in, p.goff+format.GuestOff(n), im.g.ClusterSize-in-uint64(n)))
}

// plainFill is the write that fills p's new cluster when it is one plain
// vectored write, without reading, encrypting or zeroing first: the data
// covers the cluster; or the bytes around it read as zeros (zero:
// zeroAround(p, n), computed once by the caller) and either the cluster
// is fresh (only the data is written) or zero buffers go with the data
// (no reserve, the fill judge wants whole clusters, or pad: efficient
// zeroing was refused). ok is false for every other way (writeWithCOW).
// With ok it has done what the write needs first: a fresh cluster is
// ready for early writers (Q10) before its write, if the data's range
// reads as zeros too.
func (im *Image) plainFill(p *allocation, v [][]byte, n int64, zero, pad bool) (w fillWrite, ok bool) {
	if im.crypt != nil {
		return fillWrite{}, false
	}
	st, goff, fresh := p.st, p.goff, p.fresh
	host := st.host
	g := &im.g
	in := g.InCluster(goff)
	headLen, tailLen := in, g.ClusterSize-in-uint64(n)
	if headLen == 0 && tailLen == 0 {
		return fillWrite{off: int64(host), vec: v}, true
	}
	if !zero {
		return fillWrite{}, false
	}
	// Paused on RAM, the fill judge wants whole clusters
	// (fill_adapt.go): zero buffers with the data, below.
	if im.prealloc && !im.padFresh() && !pad {
		if !fresh {
			return fillWrite{}, false // zeroThenWrite
		}
		// A hole past the high-water mark already reads as zeros: write
		// only the guest data, and let other writers into the cluster
		// right away (Q10), unless the data's own range held something
		// else (a backing file's data): an early write would link the
		// cluster even if this write failed, and that range would read
		// the hole's zeros, which it never held. Those wait for the
		// write (allocWrite, the queue's allocLink).
		im.c.freshSkips.Add(1)
		if p.src == cowZero || im.backingZero(goff, uint64(n), 0, 0) {
			st.ready.Store(true)
		}
		return fillWrite{off: int64(g.HostFor(host, goff)), vec: v}, true
	}
	// Zero buffers merged with the data in one vectored write.
	return fillWrite{off: int64(host), vec: im.padZeros(v, headLen, tailLen), cowed: !fresh}, true
}

// padZeros is v with head zero bytes before it and tail after it, from
// the shared zero buffer, for one vectored write; it counts the padding.
func (im *Image) padZeros(v [][]byte, head, tail uint64) [][]byte {
	zb := block.ZeroBuf()
	vec := make([][]byte, 0, len(v)+4)
	vec = appendZeros(vec, zb, head)
	vec = append(vec, v...)
	vec = appendZeros(vec, zb, tail)
	im.c.zeroPadBytes.Add(int64(head + tail))
	return vec
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
// woff, linked on devices that can (Q5), and counts it. done is false,
// with nothing written, when the device refused the efficient zeroing
// (counted too): the caller writes zero buffers instead.
func (im *Image) zeroThenWrite(zoff format.HostOff, zn uint64, woff format.HostOff, v [][]byte) (done bool, err error) {
	err = block.ErrNotSupported
	if im.dcap.ZeroFlags&block.Allocate != 0 {
		err = block.ZeroThenWritev(im.dev, int64(zoff), int64(zn), block.Allocate, int64(woff), v)
	}
	switch {
	case err == nil:
		im.c.fallocates.Add(1)
	case errors.Is(err, block.ErrNotSupported) || errors.Is(err, block.ErrBusy):
		im.c.zeroingRefused.Add(1)
		return false, nil
	}
	return true, err
}

// backingZero reports whether the COW areas [cstart, cstart+head) and
// [tailStart, tailStart+tail) read as zeros in the backing file (false
// negatives are fine, false positives would corrupt data).
func (im *Image) backingZero(cstart format.GuestOff, head uint64, tailStart format.GuestOff, tail uint64) bool {
	z := func(off format.GuestOff, n uint64) bool {
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
func (im *Image) readCOW(buf []byte, cstart format.GuestOff, old format.L2Entry, src cowSource, head, tail uint64) error {
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
			if err := im.readBacking(buf[cs-tail:], cstart+format.GuestOff(cs-tail)); err != nil {
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
func (im *Image) readBacking(p []byte, off format.GuestOff) error {
	if im.backing == nil || int64(off) >= im.bsize {
		clear(p)
		return nil
	}
	n := min(uint64(len(p)), uint64(im.bsize)-uint64(off))
	if err := block.ReadAt(im.backing, p[:n], int64(off)); err != nil {
		return err
	}
	clear(p[n:])
	return nil
}
