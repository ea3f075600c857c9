package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
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

// openOverlay is -s: the temporary overlay over the image cfg names,
// opened as cfg says (its backing file read-only).
func openOverlay(cfg *config) (*imgopen.Opened, error) {
	if cfg.spec {
		return nil, errors.New("-s with an image spec (--image-opts, json:, driver=) is not supported: give the file and -f")
	}
	bs := cfg.open
	bs.ReadOnly = true
	base, err := imgopen.Open(bs)
	if err != nil {
		return nil, err
	}
	size, err := base.Dev.Size()
	format := base.Format()
	if cerr := base.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	backing, err := filepath.Abs(cfg.open.Path)
	if err != nil {
		return nil, err
	}
	dir := os.Getenv("TMPDIR")
	if dir == "" {
		dir = "/var/tmp"
	}
	f, err := os.CreateTemp(dir, "vl.")
	if err != nil {
		return nil, fmt.Errorf("Could not get temporary filename: %w", err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp) // open, it lives on until qnbd closes it
	op, err := imgopen.Opener("writeback", "")
	if err != nil {
		return nil, err
	}
	if err := qcow2.Create(tmp, qcow2.CreateOptions{Size: size, BackingFile: backing, BackingFormat: format, Opener: op}); err != nil {
		return nil, fmt.Errorf("Could not create temporary overlay '%s': %w", tmp, err)
	}
	ov := cfg.open
	ov.Path, ov.Format = tmp, "qcow2"
	return imgopen.Open(ov)
}

// loadError is -l's failure, which qemu-nbd reports as it is (not as a
// failure to open the image).
type loadError struct{ err error }

func (e *loadError) Error() string { return e.err.Error() }
func (e *loadError) Unwrap() error { return e.err }
