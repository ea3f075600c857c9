package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vmdk"
)

// compressedTarget is an output that takes whole clusters compressed: a
// qcow2 image (convert -c), or a streamOptimized VMDK image, whose every
// grain is compressed (QEMU's needs_compressed_writes).
type compressedTarget interface {
	clusterSize() int64
	writeCompressed(off int64, p []byte) error
	Size() (int64, error)
	Flush() error
}

type qcow2Compressed struct{ *qcow2.Image }

func (q qcow2Compressed) clusterSize() int64 { return int64(q.Geometry().ClusterSize) }
func (q qcow2Compressed) writeCompressed(off int64, p []byte) error {
	return q.WriteCompressed(off, p)
}

type vmdkCompressed struct{ *vmdk.Disk }

func (v vmdkCompressed) clusterSize() int64 { return v.GrainSize() }
func (v vmdkCompressed) writeCompressed(off int64, p []byte) error {
	return v.Writev(off, [][]byte{p})
}

// convertCompressed copies the guest contents of src into the qcow2
// image dst (out's device) cluster by cluster, each written compressed
// (qemu-img convert -c), along qemu-img's walk for a compressed output
// (convertWalk with dst's cluster size): clusters that read as zeros are
// left out (out.leaveOut: unallocated in a new image, zero clusters over
// a backing file), as qemu-img does, unless sparse is 0 (-S 0: every
// cluster is written compressed, zeros too); with a backing file (-B)
// the clusters the source leaves to its own backing file are left to the
// output's (whole clusters only: a cluster the source has partly is read
// through its chain and written whole); clusters that do not shrink are
// written uncompressed by the engine. progress, if set, is called with
// bytes done.
func convertCompressed(src *convertSrc, dst compressedTarget, out convertOut, sparse int64, progress func(done, total int64)) error {
	cs := dst.clusterSize()
	buf := make([]byte, cs)
	dsize, err := dst.Size()
	if err != nil {
		return err
	}
	w := convertWalk{src: src, dst: out, sparse: sparse, buf: cs, cluster: cs}
	total, err := w.copyBytes(progress != nil)
	if err != nil {
		return err
	}
	var done int64
	err = w.walk(func(s convertStep) error {
		switch s.kind {
		case stepBacking:
			return nil
		case stepLeaveOut:
			if err := out.leaveOut(s.off, s.n); err != nil {
				return &convertIOError{"writing", s.off, err}
			}
			return nil
		}
		if progress != nil {
			done += s.n
			progress(done, total)
		}
		off, n := s.off, s.n
		p := buf[:n]
		if s.zero {
			clear(p)
		} else if err := readSrc(src, out, off, p); err != nil {
			return &convertIOError{"reading", off, err}
		}
		if sparse > 0 && isZero(p) {
			if err := out.leaveOut(off, n); err != nil {
				return &convertIOError{"writing", off, err}
			}
			return nil
		}
		// The last cluster is padded to the output's size (whole
		// sectors: the source may end inside one). A larger output
		// (-n) cannot take a partial cluster compressed (QEMU: EINVAL).
		if n < cs && off+n < dsize {
			return fmt.Errorf("error while writing at byte %d: Invalid argument", off)
		}
		if end := min(off+cs, dsize); end > off+n {
			clear(buf[n : end-off])
			p = buf[:end-off]
		}
		paceCompressed(out.dev, int64(len(p)))
		err := dst.writeCompressed(off, p)
		if err == nil && out.writethrough {
			err = out.dev.Flush() // dst's, through the device
		}
		if err != nil {
			return &convertIOError{"writing", off, err}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return dst.Flush()
}
