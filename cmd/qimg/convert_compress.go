package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// convertCompressed copies the guest contents of src into the qcow2
// image dst (out's device) cluster by cluster, each written compressed
// (qemu-img convert -c): clusters that read as zeros are left out
// (out.leaveOut: unallocated in a new image), as qemu-img does, unless
// sparse is 0 (-S 0: every cluster is written compressed, zeros too), and
// clusters that do not shrink are written uncompressed by the engine.
// progress, if set, is called with bytes done.
func convertCompressed(src *image, dst *qcow2.Image, out convertOut, sparse int64, progress func(done, total int64)) error {
	cs := int64(dst.Geometry().ClusterSize)
	buf := make([]byte, cs)
	dsize, err := dst.Size()
	if err != nil {
		return err
	}
	// -p counts what qemu-img's does: the clusters the block status
	// does not show as zeros (all with -S 0), each before it is read.
	leftOut := func(zm *zeroMap, off, n int64) bool { return sparse > 0 && zm.zeroUntil(off) >= off+n }
	var total, done int64
	pre := *src.zm // a cursor of its own: zeroUntil does not go back
	for off := int64(0); progress != nil && off < src.size; off += cs {
		if n := min(cs, src.size-off); !leftOut(&pre, off, n) {
			total += n
		}
	}
	for off := int64(0); off < src.size; off += cs {
		n := min(cs, src.size-off)
		if progress != nil && !leftOut(src.zm, off, n) {
			done += n
			progress(done, total)
		}
		p := buf[:n]
		zero := src.zm.zeroUntil(off) >= off+n
		if !zero {
			if err := readSalvaging(src, out, off, p); err != nil {
				return fmt.Errorf("error while reading at byte %d: %w", off, err)
			}
			zero = isZero(p)
		} else {
			clear(p)
		}
		if zero && sparse > 0 {
			if err := out.leaveOut(off, n); err != nil {
				return fmt.Errorf("error while writing at byte %d: %w", off, err)
			}
			continue
		}
		// The last cluster is padded to the output's size (whole
		// sectors: the source may end inside one). A larger output
		// (-n) cannot take a partial cluster compressed (QEMU: EINVAL).
		if n < cs && roundUp(off+n, 512) < dsize {
			return fmt.Errorf("error while writing at byte %d: Invalid argument", off)
		}
		if end := min(off+cs, dsize); end > off+n {
			clear(buf[n : end-off])
			p = buf[:end-off]
		}
		paceCompressed(out.dev, int64(len(p)))
		err := dst.WriteCompressed(off, p)
		if err == nil && out.writethrough {
			err = out.dev.Flush() // dst's, through the device
		}
		if err != nil {
			return fmt.Errorf("error while writing at byte %d: %w", off, err)
		}
	}
	return dst.Flush()
}
