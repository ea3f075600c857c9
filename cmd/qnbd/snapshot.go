package main

import (
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
		return openSpecOverlay(cfg)
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
	tmp, err := createOverlay(size, backing, format)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp) // open, it lives on until qnbd closes it
	ov := cfg.open
	ov.Path, ov.Format = tmp, "qcow2"
	return imgopen.Open(ov)
}

// openSpecOverlay is -s over an image spec: the spec opened read-only is
// the overlay's backing device in memory, as QEMU's temporary snapshot
// sets its backing node (the overlay's header names none).
func openSpecOverlay(cfg *config) (*imgopen.Opened, error) {
	base, err := openSpec(cfg, true)
	if err != nil {
		return nil, err
	}
	size, err := base.Dev.Size()
	if err != nil {
		base.Close()
		return nil, err
	}
	tmp, err := createOverlay(size, "", "")
	if err != nil {
		base.Close()
		return nil, err
	}
	defer os.Remove(tmp) // open, it lives on until qnbd closes it
	ov := cfg.open
	ov.Path = tmp
	img, err := imgopen.OpenOverlay(ov, base)
	if err != nil {
		base.Close()
		return nil, err
	}
	return img, nil
}

// createOverlay creates the temporary overlay file of -s, of the image's
// size over backing (none: ""), and returns its name.
func createOverlay(size int64, backing, format string) (string, error) {
	dir := os.Getenv("TMPDIR")
	if dir == "" {
		dir = "/var/tmp"
	}
	f, err := os.CreateTemp(dir, "vl.")
	if err != nil {
		return "", fmt.Errorf("Could not get temporary filename: %w", err)
	}
	tmp := f.Name()
	f.Close()
	op, err := imgopen.Opener("writeback", "")
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

// loadError is -l's failure, which qemu-nbd reports as it is (not as a
// failure to open the image).
type loadError struct{ err error }

func (e *loadError) Error() string { return e.err.Error() }
func (e *loadError) Unwrap() error { return e.err }
