package main

import (
	"github.com/qring/qring/internal/imgopen"
)

// qemu-nbd's two snapshot options.
//
// -s/--snapshot serves a temporary qcow2 overlay over the image, as
// qemu-nbd does (BDRV_O_SNAPSHOT): the image is opened read-only as the
// overlay's backing file, clients' writes go to the overlay, and the
// overlay, created in $TMPDIR (else /var/tmp) and unlinked as soon as it
// is open, is gone when qnbd exits, however it exits.
//
// -l/--load-snapshot=SNAPSHOT serves an internal snapshot of the image,
// read-only ("snapshot.id=ID,snapshot.name=NAME" or an ID or a name, as
// qemu-img's -l; imgopen.SnapshotParam). With -s, qemu-nbd looks the
// snapshot up in the new overlay, which has none; so does qnbd.

// openOverlay is -s: the temporary overlay (imgopen.OpenTemp) over the
// image cfg names, opened as cfg says (the image read-only).
func openOverlay(cfg *config) (*imgopen.Opened, error) {
	if cfg.spec {
		base, err := openSpec(cfg, true)
		if err != nil {
			return nil, err
		}
		return imgopen.OpenTemp(cfg.open, base, "")
	}
	bs := cfg.open
	bs.ReadOnly = true
	base, err := openFile(bs)
	if err != nil {
		return nil, err
	}
	return imgopen.OpenTemp(cfg.open, base, cfg.open.Path)
}

// loadError is -l's failure, which qemu-nbd reports as it is (not as a
// failure to open the image).
type loadError struct{ err error }

func (e *loadError) Error() string { return e.err.Error() }
func (e *loadError) Unwrap() error { return e.err }
