package imgopen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
)

// QEMU's temporary snapshot (snapshot=on: qemu-nbd -s, qemu-io -s,
// bdrv_append_temp_snapshot): a fresh qcow2 overlay in $TMPDIR (else
// /var/tmp) of the image's size takes every write; the image, opened
// read-only under it, is never written. The overlay is unlinked as soon
// as it is open, so it is gone when the process exits, however it exits.

// OpenTemp opens a temporary overlay over base, which the caller opened
// read-only, with s's open options (cache, aio, read-only, engine
// options; s.Path and s.Format are the overlay's own). With path, base is
// the file image at path: the overlay's header names path (made
// absolute) and base's format as its backing file, and base is closed
// (the overlay opens its own chain). With path "", base (a spec) stays
// open as the overlay's backing node in memory, as QEMU's temporary
// snapshot sets its backing node whatever the image is, and the returned
// Opened owns it; so it does for an export (an NBD name is no file to
// name). On error base is closed either way.
func OpenTemp(s Spec, base *Opened, path string) (*Opened, error) {
	if protocol.IsNBD(path) {
		path = ""
	}
	size, err := base.Dev.Size()
	if err != nil {
		base.Close()
		return nil, err
	}
	backing, format := "", ""
	if path != "" {
		format = base.Format()
		if err := base.Close(); err != nil {
			return nil, err
		}
		if backing, err = filepath.Abs(path); err != nil {
			return nil, err
		}
	}
	tmp, err := createTemp(size, backing, format)
	if err != nil {
		if path == "" {
			base.Close()
		}
		return nil, err
	}
	defer os.Remove(tmp) // open, it lives on until it is closed
	s.Path, s.Format = tmp, "qcow2"
	if path != "" {
		return Open(s)
	}
	ov, err := OpenOverlay(s, base)
	if err != nil {
		base.Close()
		return nil, err
	}
	return ov, nil
}

// createTemp creates the overlay file of size over backing (none: ""),
// and returns its name. The errors are QEMU's.
func createTemp(size int64, backing, format string) (string, error) {
	dir := os.Getenv("TMPDIR")
	if dir == "" {
		dir = "/var/tmp"
	}
	f, err := os.CreateTemp(dir, "vl.")
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return "", &TempFileError{Path: pe.Path, Err: pe.Err}
		}
		return "", fmt.Errorf("Could not get temporary filename: %w", err)
	}
	tmp := f.Name()
	f.Close()
	op, err := Opener("writeback", "")
	if err == nil {
		err = qcow2.Create(tmp, qcow2.CreateOptions{Size: size, BackingFile: backing, BackingFormat: format, Opener: op})
		if err != nil {
			err = fmt.Errorf("Could not create temporary overlay '%s': %w", tmp, err)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}
