package qcow2

import "github.com/qring/qring/qcow2/format"

// This file frees compressed clusters (Q13). A normal cluster freed and
// handed out again before the L2 change that dropped it is durable only
// risks, after a crash, the old guest cluster reading the new owner's
// bytes. A compressed entry over such bytes does not decompress at all:
// the guest cluster fails to read. So a host cluster whose last
// compressed reference was dropped is held out of allocation (findFree
// skips it: held.go) until a flush has made the removal durable;
// flushLocked releases the held clusters after the device flush (once
// the data gate has passed too, Q12). QEMU hands such a cluster out at
// once.

// freeCompressedLocked drops the references of compressed entry e, one
// per host cluster its stream touches; a host cluster whose refcount
// reaches 0 is held until the next flush (Q13). The caller has made the
// refcount cache depend on the L2 cache (Q3).
func (im *Image) freeCompressedLocked(e format.L2Entry) error {
	g := &im.g
	d := e.DecodeCompressed(g)
	for c := g.HostCluster(d.Off); c <= g.HostCluster(d.Off+format.HostOff(d.Size)-1); c++ {
		if err := im.freeHeldLocked(c, true); err != nil {
			return err
		}
	}
	return nil
}
