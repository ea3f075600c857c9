package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// runSnapshot is qemu-img snapshot: -l lists, -c creates, -a applies, -d
// deletes (by name, as qemu-img 7.2) an internal snapshot. Without any,
// it opens the image for writing and does nothing, as qemu-img does.
func runSnapshot(e *env, args []string) int {
	o, err := e.getopt(args, "la:c:d:qU", "force-share", "object:", "image-opts")
	if err != nil {
		return e.usageErr(err)
	}
	op, name := "", ""
	n := 0
	for _, k := range []string{"l", "a", "c", "d"} {
		if o.has(k) {
			n += len(o.vals[k]) // one action, given once: -c x -c y is refused too
			op, name = k, o.get(k, "")
		}
	}
	if n > 1 {
		return e.usageErr(errors.New("Cannot mix '-l', '-a', '-c', '-d'"))
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting one image file name"))
	}
	eo := qcow2.Options{ForceShare: o.forceShare(), PreallocSize: noReserve}
	spec, err := o.imageSpec(o.args[0], imgopen.Spec{ReadOnly: op == "l", Opts: eo}) // no -f: qemu-img 7.2 snapshot has none
	if err != nil {
		return e.usageErr(err)
	}
	img, err := openImage(spec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	if op != "l" {
		img.GuardProbed(e.stderr) // a probed raw image opened writable: QEMU's warning
	}
	if op != "" {
		err = doSnapshot(e, img, op, name)
	}
	if err = withCloseErr(err, img.Close()); err != nil {
		return e.errorf(1, "%v", err)
	}
	return 0
}

// withCloseErr is an operation's error err with Close's cerr: cerr when
// the operation succeeded; both when the failure marked the image
// corrupt (an undo that failed too): the operation's message, in
// qemu-img's words, names only an errno, and Close says what became of
// the image.
func withCloseErr(err, cerr error) error {
	switch {
	case err == nil:
		return cerr
	case errors.Is(cerr, qcow2.ErrCorrupt):
		return fmt.Errorf("%v\n%v", err, cerr)
	}
	return err
}

// doSnapshot runs one snapshot operation on an open image, with
// qemu-img's messages.
func doSnapshot(e *env, img *imgopen.Opened, op, name string) error {
	im := img.Image
	if im == nil {
		im, _ = underRaw(img.Dev)
	}
	if im == nil && op == "l" {
		return nil // a raw image lists no snapshots (qemu-img: nothing, exit 0)
	}
	if im == nil {
		// A format without internal snapshots (raw, vpc, vmdk), in
		// qemu-img's words for each operation.
		switch op {
		case "c":
			return fmt.Errorf("Could not create snapshot '%s': -95 (Operation not supported)", name)
		case "a":
			if img.ProbedRaw != "" {
				// bdrv_snapshot_goto's fallback to the file child
				// reopens the raw driver: QEMU warns a second time.
				fmt.Fprintf(e.stderr, imgopen.ProbedWarning, img.ProbedRaw)
			}
			return fmt.Errorf("Could not apply snapshot '%s': Block driver does not support snapshots", name)
		case "d":
			return fmt.Errorf("Could not delete snapshot '%s': snapshot not found", name)
		}
		return errors.New("This operation is not supported by the image format")
	}
	switch op {
	case "l":
		snaps, err := readSnapshots(im)
		if err != nil {
			return err
		}
		if len(snaps) > 0 {
			writeSnapshotsHuman(e.stdout, snaps)
		}
	case "c":
		if im.HasDataFile() {
			// QEMU's qcow2_snapshot_create: ENOTSUP, as its errno.
			return fmt.Errorf("Could not create snapshot '%s': -95 (Operation not supported)", name)
		}
		// qemu-img copies the name into QEMUSnapshotInfo's 256-byte
		// buffer (pstrcpy): 255 bytes are stored, the rest dropped,
		// and -a, -d and -l then see the stored name.
		stored := name
		if len(stored) > 255 {
			stored = stored[:255]
		}
		_, err := im.CreateSnapshot(stored)
		var en syscall.Errno
		switch {
		case errors.Is(err, qcow2.ErrRefcountOverflow):
			// qcow2_snapshot_create's -ERANGE comes out of
			// bdrv_snapshot_create as -EINVAL, which qemu-img prints.
			return fmt.Errorf("Could not create snapshot '%s': -22 (Invalid argument)", name)
		case errors.As(err, &en):
			// qemu-img's "%d (%s)" of bdrv_snapshot_create's -errno
			// (ENOSPC on a full file system).
			return fmt.Errorf("Could not create snapshot '%s': -%d (%s)", name, int(en), strerror(en))
		case err != nil:
			return fmt.Errorf("Could not create snapshot '%s': %w", name, err)
		}
	case "a":
		if im.HasDataFile() {
			// qcow2_snapshot_goto refuses before it looks the name up.
			return fmt.Errorf("Could not apply snapshot '%s': Failed to load snapshot: Operation not supported", name)
		}
		if len(im.Bitmaps()) > 0 {
			// As qemu-img 7.2 (bdrv_snapshot_goto), whatever the
			// bitmaps' state: the engine's ApplySnapshot would mark
			// the enabled ones dirty everywhere (Q22), and leave the
			// disabled ones as they were over data that changed.
			return fmt.Errorf("Could not apply snapshot '%s': Device has active dirty bitmaps", name)
		}
		if err := im.ApplySnapshot(name); err != nil {
			if errors.Is(err, qcow2.ErrNoSnapshot) {
				return fmt.Errorf("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory", name)
			}
			return fmt.Errorf("Could not apply snapshot '%s': %w", name, err)
		}
	case "d":
		// qemu-img snapshot -d matches the name only.
		err := im.DeleteSnapshotNamed(name)
		if errors.Is(err, qcow2.ErrNoSnapshot) {
			return fmt.Errorf("Could not delete snapshot '%s': snapshot not found", name)
		}
		if err != nil {
			return fmt.Errorf("Could not delete snapshot '%s': %w", name, err)
		}
	}
	return nil
}
