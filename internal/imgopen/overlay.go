package imgopen

import "errors"

// OpenOverlay opens the qcow2 image at s.Path over base as its backing
// device, whatever the overlay's header names (QEMU's temporary snapshot
// overlay, bdrv_append_temp_snapshot, whose backing node is set in
// memory: the base may be any spec). The returned Opened owns base:
// closing it closes the overlay, then base. On error base is left open.
func OpenOverlay(s Spec, base *Opened) (*Opened, error) {
	s.Format = "qcow2"
	s.Opts.Backing = base.Dev
	ov, err := Open(s)
	if err != nil {
		return nil, err
	}
	closeOverlay := ov.close
	if closeOverlay == nil {
		closeOverlay = ov.Dev.Close
	}
	ov.close = func() error { return errors.Join(closeOverlay(), base.Close()) }
	// The overlay's json: backing files are base's (Opts.Backing).
	ov.throttles = base.throttles
	return ov, nil
}
