package nbdqcow2

import (
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
)

// Node reports the allocation of one qcow2 image seen through raw format
// nodes whose window starts Offset bytes into it, as qemu-nbd reports a
// raw node over a qcow2 node: QEMU's raw driver answers block status with
// BDRV_BLOCK_RAW, and the block layer then asks the qcow2 node for its
// own status (bdrv_co_block_status), not its backing chain's, whose
// walk stops at the raw node. So, unlike Status:
//
//   - an unallocated run is a hole at depth 0 even where a backing file
//     has data ("qemu:allocation-depth" counts the raw node's layers
//     only);
//   - it reads as zeros (NBD_STATE_ZERO) only when the image has no
//     backing file, or when the run starts at or past the backing file's
//     end: QEMU checks the run's start only, so a run that crosses that
//     end is no zero anywhere.
//
// Data and zero clusters are the image's (depth 1), as in Status.
type Node struct {
	Image  *qcow2.Image
	Offset int64
}

var _ nbd.StatusSource = Node{}

// Extent implements nbd.StatusSource.
func (s Node) Extent(off, n int64) (nbd.Extent, error) {
	off += s.Offset
	size, err := s.Image.Size()
	if err != nil {
		return nbd.Extent{}, err
	}
	if off >= size {
		// Past the image (a window sized in sectors over an odd
		// size): zeros no layer has.
		return nbd.Extent{Len: n, Hole: true, Zero: true}, nil
	}
	st, err := s.Image.BlockStatus(off, min(n, size-off))
	if err != nil {
		return nbd.Extent{}, err
	}
	st = s.Image.HostHoles(st) // as Status: zeros where a cluster maps a host hole
	if st.Allocated {
		return nbd.Extent{Len: st.Len, Hole: !st.Data, Zero: st.Zero, Depth: 1}, nil
	}
	e := nbd.Extent{Len: st.Len, Hole: true, Zero: true}
	if b := s.Image.Backing(); b != nil {
		bs, err := b.Size()
		if err != nil {
			return nbd.Extent{}, err
		}
		if _, ok := b.(*qcow2.Image); !ok {
			bs = qcow2.RawLen(bs) // QEMU's length of a raw file, in sectors
		}
		e.Zero = off >= bs
		// One answer of QEMU's runs over the unallocated clusters up to
		// the end of the L2 table (BlockStatus may stop earlier), and its
		// start alone decides zero: the run goes on past the backing
		// file's end.
		g := s.Image.Geometry()
		end := min(off+n, size, (off/int64(g.ClusterSize*g.L2Entries)+1)*int64(g.ClusterSize*g.L2Entries))
		for off+e.Len < end {
			nx, err := s.Image.BlockStatus(off+e.Len, end-off-e.Len)
			if err != nil {
				return nbd.Extent{}, err
			}
			if nx.Allocated {
				break
			}
			e.Len += nx.Len
		}
	}
	return e, nil
}
