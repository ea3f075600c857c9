package qcow2

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// ReadAt implements io.ReaderAt. Reads past the virtual size fail with
// io.EOF semantics: the part inside is read, and io.EOF returned.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	size, err := im.Size()
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, block.ErrRange
	}
	if off >= size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	vp := getVec()
	*vp = append(*vp, p[:n])
	err = im.Readv(off, *vp)
	putVec(vp)
	if err != nil {
		return 0, err
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// Readv reads guest bytes at off into bufs. Bytes past the virtual size
// read as zeros (B2).
func (im *Image) Readv(off int64, bufs [][]byte) error {
	return im.signal(im.readvTo(off, bufs, im.vsize.Load()))
}

// readvTo is Readv with bytes at or past size read as zeros: the size
// guests may address (vsize), or, for an encrypted write's
// read-modify-write of the sector across a Shrink's cut, the header's
// (hsize: the Shrink may yet be refused, Q18).
func (im *Image) readvTo(off int64, bufs [][]byte, size uint64) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	im.c.guestReads.Add(1)
	im.c.guestBytesRead.Add(n)
	var vp *[][]byte
	defer func() {
		if vp != nil {
			putVec(vp)
		}
	}()
	done := int64(0)
	for done < n {
		pos := off + done
		// Extend the run over following clusters with the same kind of
		// mapping and contiguous host offsets. The lookup and the read
		// of host data happen inside the data gate, so no discard frees
		// the clusters under the read (Q12).
		tok := im.gate.enter()
		m, err := im.mapRun(guestOff(pos), uint64(n-done), format.GuestOff(size))
		if err != nil {
			im.gate.exit(tok)
			return err
		}
		if m.kind != format.ClusterNormal && m.kind != format.ClusterCompressed {
			im.gate.exit(tok) // no host data to read
		}
		chunk := int64(m.length)
		v := bufs
		if chunk != n {
			if vp == nil {
				vp = getVec()
			}
			*vp = sliceVec((*vp)[:0], bufs, done, chunk)
			v = *vp
		}
		err = im.readRun(m, guestOff(pos), v)
		if m.kind == format.ClusterNormal || m.kind == format.ClusterCompressed {
			im.gate.exit(tok)
		}
		if err != nil {
			return err
		}
		done += chunk
	}
	return nil
}

// run is a guest range with one kind of mapping.
type run struct {
	kind   format.ClusterType
	host   format.HostOff // host offset of the first byte (normal)
	entry  format.L2Entry
	length uint64
}

// mapRun maps [off, off+max) starting at off: up to the end of the first
// run of clusters of the same type (host-contiguous for normal ones), and
// never past size, the virtual size its caller goes by (the rest reads as
// zeros, "past EOF").
func (im *Image) mapRun(off format.GuestOff, maxLen uint64, size format.GuestOff) (run, error) {
	g := &im.g
	// Lock-free: entries are read atomically per table (see l2.go).
	if im.state.Load()&stClosed != 0 {
		return run{}, block.ErrClosed
	}
	if off >= size {
		return run{kind: format.ClusterZeroPlain, length: maxLen}, nil
	}
	maxLen = min(maxLen, uint64(size-off))
	if g.ExtendedL2 {
		return im.xmapRun(off, maxLen)
	}
	e, err := im.readEntry(off)
	if err != nil {
		return run{}, err
	}
	r := run{kind: im.kindOf(e), entry: e} // DF2
	if r.kind == format.ClusterNormal || r.kind == format.ClusterZeroAlloc {
		r.host = g.HostFor(e.Offset(), off)
	}
	r.length = min(g.ClusterSize-g.InCluster(off), maxLen)
	if r.kind == format.ClusterCompressed {
		return r, nil
	}
	// Extend while the next cluster continues the run (at most 256
	// clusters per lookup to bound the lock hold).
	for k := 0; r.length < maxLen && k < 256; k++ {
		ne, err := im.readEntry(off + format.GuestOff(r.length))
		if err != nil {
			// The run ends before an entry that cannot be read or
			// used, as QEMU's block status ends it (its lookup of the
			// next run reports the error): a caller that walks the
			// disk gets the good part before it.
			break
		}
		nk := im.kindOf(ne)
		if nk != r.kind {
			break
		}
		if (nk == format.ClusterNormal || nk == format.ClusterZeroAlloc) && ne.Offset() != r.host+format.HostOff(r.length) {
			break
		}
		r.length = min(r.length+g.ClusterSize, maxLen)
	}
	return r, nil
}

// mapRunGated is mapRun for a caller that reads no host data: inside
// the data gate, so the L2 table its lookup found through the L1 is not
// freed and reused under it (Q12).
func (im *Image) mapRunGated(off format.GuestOff, maxLen uint64) (run, error) {
	tok := im.gate.enter()
	defer im.gate.exit(tok)
	return im.mapRun(off, maxLen, format.GuestOff(im.vsize.Load()))
}

func (im *Image) readRun(r run, off format.GuestOff, v [][]byte) error {
	switch r.kind {
	case format.ClusterNormal:
		if im.crypt != nil {
			return im.readDecrypt(r.host, off, v)
		}
		return im.readData(r.host, v) // DF1: from the data file if there is one
	case format.ClusterZeroPlain, format.ClusterZeroAlloc:
		zeroVec(v)
		return nil
	case format.ClusterUnallocated:
		if im.backing == nil || int64(off) >= im.bsize {
			zeroVec(v)
			return nil
		}
		n := min(r.length, uint64(im.bsize)-uint64(off))
		if n == r.length {
			return im.backing.Readv(int64(off), v)
		}
		vp := getVec()
		defer putVec(vp)
		*vp = sliceVec((*vp)[:0], v, 0, int64(n))
		if err := im.backing.Readv(int64(off), *vp); err != nil {
			return err
		}
		zeroVec(sliceVec((*vp)[:0], v, int64(n), int64(r.length-n)))
		return nil
	case format.ClusterCompressed:
		buf := im.clusterBuf()
		defer im.putClusterBuf(buf)
		if err := im.readCompressed(*buf, r.entry); err != nil {
			return err
		}
		in := im.g.InCluster(off)
		copyToVec(v, (*buf)[in:in+r.length])
		return nil
	}
	return fmt.Errorf("qcow2: bad run kind %v", r.kind)
}

var clusterPools sync.Map // cluster size -> *sync.Pool

func (im *Image) clusterBuf() *[]byte {
	cs := int(im.g.ClusterSize)
	p, _ := clusterPools.LoadOrStore(cs, &sync.Pool{New: func() any {
		b := block.AlignedBuf(cs, block.DefaultMemAlign)
		return &b
	}})
	return p.(*sync.Pool).Get().(*[]byte)
}

func (im *Image) putClusterBuf(b *[]byte) {
	p, _ := clusterPools.Load(int(im.g.ClusterSize))
	p.(*sync.Pool).Put(b)
}

// readCompressed inflates the compressed cluster of entry e into buf (one
// cluster). QEMU stores raw deflate (window bits -12) or a zstd frame.
func (im *Image) readCompressed(buf []byte, e format.L2Entry) error {
	d := e.DecodeCompressed(&im.g)
	fsize, err := im.dev.Size()
	if err != nil {
		return err
	}
	if int64(d.Off) >= fsize {
		return corruptf("l2_entry", uint64(e), "compressed cluster past the end of the file")
	}
	n := min(d.Size, uint64(fsize)-uint64(d.Off))
	src := make([]byte, n)
	if err := block.ReadAt(im.dev, src, int64(d.Off)); err != nil {
		return err
	}
	ctype := uint8(im.ctype.Load()) // lock-free: not the header's field
	return decompressCluster(ctype, src, buf, uint64(e))
}

// decompressCluster inflates src, the bytes a compressed cluster's
// descriptor covers, into buf (one cluster), which it must fill;
// entry is the L2 entry, for the error.
func decompressCluster(ctype uint8, src, buf []byte, entry uint64) error {
	switch ctype {
	case format.CompressionZlib:
		r := flate.NewReader(bytes.NewReader(src))
		k, err := io.ReadFull(r, buf)
		r.Close()
		if err != nil && !(err == io.ErrUnexpectedEOF && k == len(buf)) {
			return corruptf("l2_entry", entry, "bad compressed cluster: %v", err)
		}
	case format.CompressionZstd:
		// QEMU writes one zstd frame; the descriptor may cover trailing
		// bytes of the sector, which the decoder must ignore.
		out, err := decodeZstdPrefix(src, buf[:0])
		if err != nil || len(out) != len(buf) {
			return corruptf("l2_entry", entry, "bad zstd cluster (%d bytes): %v", len(out), err)
		}
	default:
		return unsupportedf("compression_type", uint64(ctype), "unknown compression type")
	}
	return nil
}

// maxZstdWindow bounds the window a compressed cluster's zstd frame
// may declare: the decoder allocates it before the first block, and
// its default limit (512 MiB) let a 10-byte hostile frame cost 512 MiB
// a read. A frame of one cluster needs no more than the largest
// cluster (QEMU's libzstd, which knows the size, and compressCluster
// write windows of the cluster's size at most).
const maxZstdWindow = 1 << format.MaxClusterBits

// decodeZstdPrefix decodes the first frame of src, ignoring trailing
// garbage.
func decodeZstdPrefix(src, dst []byte) ([]byte, error) {
	r, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := dst[:cap(dst)]
	k, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return buf[:k], err
}

// IsZeroFast reports whether [off, off+n) is known to read as zeros
// without reading data: unallocated (with a zero backing) or zero
// clusters, or past the end (QEMU's bdrv_co_is_zero_fast). False
// negatives are allowed.
func (im *Image) IsZeroFast(off, n int64) bool {
	if n <= 0 {
		return true
	}
	for n > 0 {
		m, err := im.mapRunGated(guestOff(off), uint64(n))
		if err != nil {
			return false
		}
		switch m.kind {
		case format.ClusterZeroPlain, format.ClusterZeroAlloc:
		case format.ClusterUnallocated:
			if im.backing != nil && off < im.bsize {
				if im.bzero == nil || !im.bzero.IsZeroFast(off, min(int64(m.length), im.bsize-off)) {
					return false
				}
			}
		default:
			return false
		}
		off += int64(m.length)
		n -= int64(m.length)
	}
	return true
}
