package imgopen

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
)

// openRaw opens the host file at path as a raw image with op, through
// the engine's raw opener, which takes QEMU's image locks for a raw
// image (qcow2.LockPerms: read, and write unless read-only; every
// permission shared) unless o.NoLock; o.ForceShare shares them all
// read-only. Open's raw images and a spec's host files (the file
// driver, a raw driver's file name) come through here, so both routes
// lock alike.
//
// unshareResize relocks the file so that no one else may resize it while
// it is open, as an NBD export does (qemu's nbd_export_create: its
// clients were told the size). A qcow2 image over the file relocks it as
// qcow2, which shares no resize already.
func openRaw(path string, op qcow2.Opener, readOnly bool, o qcow2.Options, unshareResize bool) (block.Device, error) {
	d, err := qcow2.OpenFormat(path, "raw", qcow2.Options{Opener: op, ReadOnly: readOnly, NoLock: o.NoLock, ForceShare: o.ForceShare})
	if err != nil {
		return nil, err
	}
	l, ok := d.(block.Locker)
	if !unshareResize || !ok || o.NoLock || o.ForceShare {
		return d, nil
	}
	perm, shared := qcow2.LockPerms(qcow2.FormatRaw, readOnly, false, false)
	if err := qcow2.LockAs(l, path, perm, shared&^block.PermResize); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}
