package qcow2

import "errors"

// fatalEntryError is an L2 entry that a lookup cannot use and that QEMU's
// lookups take for proof of a damaged image (qcow2_signal_corruption
// with fatal set): a host offset that is not cluster aligned, a
// subcluster bitmap that is invalid. The public operation that met it
// marks the image corrupt (signal, Q9); Check reports and repairs it.
type fatalEntryError struct{ err error }

func (e *fatalEntryError) Error() string { return e.err.Error() }
func (e *fatalEntryError) Unwrap() error { return e.err }

// signal returns err, having marked the image corrupt first when err is
// a fatalEntryError (Q9). Called by the public reads, writes, zeroings,
// discards and block status once they hold no gate token or writer
// slot, so taking mu here waits for nothing that waits for them.
func (im *Image) signal(err error) error {
	if err == nil {
		return nil
	}
	return im.signalErr(err)
}

// signalErr is signal for an error (apart, so that the hot paths'
// successful returns allocate nothing: fe escapes).
func (im *Image) signalErr(err error) error {
	var fe *fatalEntryError
	if !errors.As(err, &fe) {
		return err
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return err
	}
	return im.markCorrupt(fe.err)
}
