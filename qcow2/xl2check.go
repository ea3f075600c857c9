package qcow2

import "github.com/qring/qring/qcow2/format"

// checkBitmap reports the subcluster bitmap corruptions qemu-img check
// reports (check_refcounts_l2): a compressed cluster with a non-zero
// bitmap, a subcluster both allocated and zero, an unallocated cluster
// with allocation bits. Like QEMU's check -r all it does not repair
// them: no rewrite of the bitmap is known to be right (the data of an
// allocated-and-zero subcluster may or may not be the guest's). Unlike
// QEMU, the clusters such an entry points at stay counted (QEMU skips a
// compressed cluster with a bitmap, so a leak repair would free its
// data).
func (im *Image) checkBitmap(c *checker, e format.L2Entry, bitmap uint64, index uint64, l2off format.HostOff) {
	if !im.g.ExtendedL2 {
		return
	}
	if format.ValidateBitmapIn(e, bitmap, im.df.ext) == nil { // DF2
		return
	}
	// qemu-img check's messages.
	switch {
	case e.Compressed():
		c.msg("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", index, uint64(e))
	case e.Offset() != 0:
		c.msg("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", uint64(e.Offset()))
	default:
		c.msg("ERROR: Unallocated cluster has non-zero subcluster allocation map (L2 table 0x%x, entry %d)", uint64(l2off), index)
	}
	c.r.Corruptions++
}
