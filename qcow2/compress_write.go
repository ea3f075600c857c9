package qcow2

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/deflate4k"
	"github.com/qring/qring/qcow2/format"
)

// This file writes compressed clusters (QEMU's
// qcow2_co_pwritev_compressed_part, what qemu-img convert -c does): a
// whole guest cluster is compressed into a new, unallocated guest
// cluster. Compressed streams are packed into host clusters (QEMU's
// qcow2_alloc_bytes): each host cluster a stream touches gets one
// reference per stream, so a host cluster holding parts of k streams has
// refcount k, which is what qemu-img check counts. On a buffered file
// (request alignment 1) streams are packed byte to byte, as QEMU packs
// them; on a device with a request alignment (O_DIRECT) each starts at a
// multiple of it, so that every write is aligned and no two writers
// share a device block (QEMU read-modify-writes the shared sectors).
//
// Ordering: the refcount increments are durable before the L2 entry (Q1),
// and so is the compressed data (the link depends on a flush, Q13):
// unlike a normal cluster, a compressed entry over stale bytes would not
// read back as old data but fail to decompress. For the same reason a
// host cluster freed from a compressed entry waits for a flush before it
// is handed out again (Q13, compress_free.go).

// ErrNotCompressible is returned by WriteCompressed for a target that may
// not be written compressed: the guest cluster is allocated already
// (QEMU: "Compression can't overwrite anything"), or the request is not
// one whole cluster (or the zero-padded last one).
var ErrNotCompressible = fmt.Errorf("%w: compressed write needs a whole unallocated cluster", ErrUnsupported)

// WriteCompressed writes one guest cluster at off (cluster aligned; p is
// the cluster, or the rest of the disk for the last partial cluster,
// which is zero-padded) compressed with the image's compression type
// (zlib or zstd). Data that does not shrink is written as a normal
// cluster, as QEMU does. The guest cluster must be unallocated (or a
// plain zero cluster): compression never overwrites anything.
func (im *Image) WriteCompressed(off int64, p []byte) error {
	n := int64(len(p))
	tok := im.writers.enter() // Q18: before the size check
	defer im.writers.exit(tok)
	if err := im.checkWrite(off, n); err != nil {
		return err
	}
	if err := im.refuseEncrypted("compressed writes (QEMU writes them in the clear)"); err != nil {
		return err
	}
	if err := im.refuseDataFile("compressed writes"); err != nil { // DF6
		return err
	}
	im.markDirty(off, n)       // Q22
	defer im.markDirty(off, n) // Q22: and again once done (a bitmap cleared, added or enabled meanwhile)
	cs := int64(im.g.ClusterSize)
	if off%cs != 0 || n == 0 || n > cs || (n < cs && off+n != int64(im.hsize.Load())) {
		return ErrNotCompressible
	}
	src := p
	if n < cs {
		src = make([]byte, cs)
		copy(src, p)
	}
	for {
		// The type under mu: a downgrade may change it (zstd to zlib)
		// while nothing compressed is linked yet.
		im.mu.Lock()
		ctype := im.hdr.CompressionType
		im.mu.Unlock()
		out, err := compressCluster(ctype, src, int(cs))
		if err != nil {
			return err
		}
		if out == nil {
			// Does not shrink: a normal cluster (QEMU writes it
			// uncompressed).
			return im.Writev(off, [][]byte{p})
		}
		err = im.writeCompressed(guestOff(off), out, ctype)
		if errors.Is(err, errCompressionChanged) {
			continue // compressed again, with the image's new type
		}
		if err == nil {
			im.c.guestWrites.Add(1)
			im.c.guestBytesWritten.Add(n)
		}
		return err
	}
}

// errCompressionChanged: the image's compression type changed while a
// stream compressed with the old one was being written; it is not linked.
var errCompressionChanged = errors.New("qcow2: the compression type changed during a compressed write")

// compressCluster compresses one cluster as QEMU does: raw deflate with a
// 4 KiB window (QEMU's deflateInit2 with window bits -12 at level 6;
// inflate with -12 rejects distances past 4 KiB) or one zstd frame. It returns nil
// when the result would not be smaller than the cluster.
func compressCluster(ctype uint8, src []byte, cs int) ([]byte, error) {
	switch ctype {
	case format.CompressionZlib:
		// zlib's level 6 matching (deflate4k): klauspost's 4 KiB
		// window encoder made clusters 3-6 % larger than qemu-img's.
		out := deflate4k.Compress(make([]byte, 0, cs), src)
		if len(out) >= cs {
			return nil, nil
		}
		return out, nil
	case format.CompressionZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		out := enc.EncodeAll(src, make([]byte, 0, cs))
		if len(out) >= cs {
			return nil, nil
		}
		return out, nil
	}
	return nil, unsupportedf("compression_type", uint64(ctype), "unknown compression type")
}

// zstdEncoder is shared: EncodeAll is safe for concurrent use.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
})

// writeCompressed places the compressed stream c of the guest cluster of
// goff: register the guest cluster (Q7), allocate bytes and make the L2
// table writable under mu, write the stream without mu, then link under
// mu (or give the bytes back).
//
// The stream is linked only if the image's compression type is still
// ctype, the one it was compressed with: a downgrade from zstd may run
// while it is written, finding nothing compressed yet
// (errCompressionChanged, the bytes given back).
func (im *Image) writeCompressed(goff format.GuestOff, c []byte, ctype uint8) error {
	gran := im.compressGranularity()
	size := (uint64(len(c)) + gran - 1) / gran * gran
	buf := block.AlignedBuf(int(size), im.memAlign)
	copy(buf, c)

	im.mu.Lock()
	if err := im.writableLocked(); err != nil { // as beginAllocLocked
		im.mu.Unlock()
		return err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		im.mu.Unlock()
		blocker.Wait()
		// Whatever the other writer did, the cluster is no longer ours
		// to compress into unless it stayed unallocated: look again.
		return im.writeCompressed(goff, c, ctype)
	}
	defer im.allocs.Release(reg)
	host, err := im.planCompressedLocked(goff, size)
	im.mu.Unlock()
	if err != nil {
		return err
	}
	werr := im.dev.Writev(int64(host), [][]byte{buf})

	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed { // as commitAllocLocked: not linked, not acknowledged
		return block.ErrClosed
	}
	if werr == nil && im.hdr.CompressionType != ctype {
		werr = errCompressionChanged
	}
	if werr == nil {
		werr = im.linkCompressedLocked(goff, host, uint64(len(c)))
	}
	if werr != nil {
		im.freeBytesLocked(host, size) // best effort: else a leak
	}
	return werr
}

// compressGranularity is the alignment of compressed streams on the host:
// the device's request alignment (a byte on a buffered file: streams
// packed as QEMU packs them), at least a sector on a device that has one.
func (im *Image) compressGranularity() uint64 {
	a := uint64(im.dcap.Align)
	switch {
	case a <= 1:
		return 1
	case a < 512:
		return 512
	case a > im.g.ClusterSize:
		return 512 // not reached: such a device refuses the image's writes
	}
	return a
}

// planCompressedLocked checks that the guest cluster of goff may be
// written compressed, makes its L2 table writable and allocates size
// bytes of host space for the stream.
func (im *Image) planCompressedLocked(goff format.GuestOff, size uint64) (format.HostOff, error) {
	if err := im.writableLocked(); err != nil {
		return 0, err
	}
	e, err := im.entry(goff)
	if err != nil {
		return 0, err
	}
	if t := e.Type(); t != format.ClusterUnallocated && t != format.ClusterZeroPlain {
		return 0, ErrNotCompressible
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return 0, err
	}
	return im.allocBytesLocked(size)
}

// allocBytesLocked allocates size bytes (at most a cluster) for a
// compressed stream, continuing in the host cluster the last stream ended
// in when it still has a reference (QEMU's free_byte_offset), and counts
// one reference to each host cluster the range touches.
func (im *Image) allocBytesLocked(size uint64) (format.HostOff, error) {
	g := &im.g
	if err := im.markDirtyBit(); err != nil { // Q8
		return 0, err
	}
	off := im.compFree
	if off != 0 {
		rc, err := im.refcount(g.HostCluster(off))
		if err != nil {
			return 0, err
		}
		if rc == 0 || rc >= g.RefcountMax {
			off = 0
		}
	}
	room := uint64(0)
	if off != 0 {
		room = g.ClusterSize - uint64(off)%g.ClusterSize
	}
	if off == 0 || room < size {
		nc, _, err := im.allocClustersLocked(1) // refcount 1, SP1
		if err != nil {
			return 0, err
		}
		im.c.clustersAllocated.Add(1)
		if off == 0 || nc != off+format.HostOff(room) {
			off = nc
		} else if err := im.updateRefcountLocked(g.HostCluster(off), 1); err != nil {
			// The stream spans the partial cluster and the new one
			// right after it: the partial one gets its reference too.
			im.freeClustersLocked(nc, 1)
			return 0, err
		}
	} else if err := im.updateRefcountLocked(g.HostCluster(off), 1); err != nil {
		return 0, err
	}
	im.compFree = off + format.HostOff(size)
	if uint64(im.compFree)%g.ClusterSize == 0 {
		im.compFree = 0
	}
	return off, nil
}

// freeBytesLocked drops the references allocBytesLocked took for the
// range [off, off+size). A cluster whose count falls to 0 is held until a
// flush (Q3, Q13): it may hold other streams whose entries' removal is
// not durable yet (a Discard took their count to this one's).
func (im *Image) freeBytesLocked(off format.HostOff, size uint64) {
	g := &im.g
	for c := g.HostCluster(off); c <= g.HostCluster(off+format.HostOff(size)-1); c++ {
		im.freeHeldLocked(c, true)
	}
}

// linkCompressedLocked points the L2 entry of goff at the compressed
// stream of n bytes at host: after the refcounts (Q1) and the stream
// itself (a flush, Q13) are durable.
func (im *Image) linkCompressedLocked(goff format.GuestOff, host format.HostOff, n uint64) error {
	e, err := format.EncodeCompressed(&im.g, host, n)
	if err != nil {
		return err
	}
	if err := im.writableLocked(); err != nil {
		return err
	}
	if im.linkFault != nil {
		if err := im.linkFault(); err != nil {
			return err
		}
	}
	im.l2c.DependsOnFlush() // Q13
	if !im.lazy {
		if err := im.l2c.SetDependency(im.rbc); err != nil { // Q1
			return err
		}
	}
	// With extended L2 entries a compressed cluster's bitmap is all
	// clear (QEMU's rule): the zero bits an unallocated cluster had go.
	if im.g.ExtendedL2 {
		err = im.setXEntry(goff, e, 0)
	} else {
		err = im.setEntry(goff, e)
	}
	if err != nil {
		return err
	}
	im.event(EvLink)
	return nil
}
