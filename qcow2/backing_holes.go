package qcow2

import "github.com/qring/qring/block"

// holeProber is the zeroProber of a backing device that maps its holes
// (block.DataMapper: a raw file's SEEK_HOLE, a VHD's or VMDK's blocks
// that read as zeros), as QEMU's block status answers for any backing
// node: a range reads as zeros when it lies in holes only. Data, or a
// failure to tell, is "not known to be zero".
type holeProber struct{ dm block.DataMapper }

func (h holeProber) IsZeroFast(off, n int64) bool {
	for n > 0 {
		data, k, err := h.dm.DataRun(off, n)
		if err != nil || data || k <= 0 {
			return false
		}
		off += k
		n -= k
	}
	return true
}
