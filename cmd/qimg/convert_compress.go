package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// convertCompressed copies the guest contents of src into the new qcow2
// image dst cluster by cluster, each written compressed (qemu-img convert
// -c): clusters that read as zeros are left unallocated, as qemu-img
// does, unless sparse is 0 (-S 0: every cluster is written compressed,
// zeros too), and clusters that do not shrink are written uncompressed
// by the engine. progress, if set, is called with bytes done.
func convertCompressed(src *image, dst *qcow2.Image, sparse int64, progress func(done, total int64)) error {
	cs := int64(dst.Geometry().ClusterSize)
	buf := make([]byte, cs)
	dsize, err := dst.Size()
	if err != nil {
		return err
	}
	for off := int64(0); off < src.size; off += cs {
		n := min(cs, src.size-off)
		if progress != nil {
			progress(off, src.size)
		}
		p := buf[:n]
		if src.zm.zeroUntil(off) >= off+n {
			if sparse > 0 {
				continue
			}
			clear(p)
		} else if err := src.dev.Readv(off, [][]byte{p}); err != nil {
			return fmt.Errorf("error while reading at byte %d: %w", off, err)
		} else if sparse > 0 && isZero(p) {
			continue
		}
		// The last cluster is padded to the output's size (whole
		// sectors: the source may end inside one).
		if end := min(off+cs, dsize); end > off+n {
			clear(buf[n : end-off])
			p = buf[:end-off]
		}
		if err := dst.WriteCompressed(off, p); err != nil {
			return fmt.Errorf("error while writing at byte %d: %w", off, err)
		}
	}
	if progress != nil {
		progress(src.size, src.size)
	}
	return dst.Flush()
}
