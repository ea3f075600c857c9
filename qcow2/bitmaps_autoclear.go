package qcow2

import "github.com/qring/qring/qcow2/format"

// Stale bitmaps: an image with a bitmaps extension whose autoclear bit
// is clear was modified by a program lacking bitmap support (or is a
// version 2 image, which has no autoclear bits). QEMU 7.2 then ignores
// the bitmaps: its open warns (qcow2_read_extensions), every open, the
// read-only ones too, once per such extension; their clusters stay
// allocated and nothing references them (check counts them leaked);
// and a writable open (check -r's too) drops the extension from the
// header (qcow2_update_header writes none), the autoclear bit staying
// clear. The engine does the same: Options.Warn receives the warning,
// and clearAutoclear drops the extension.

// QEMU's words (qcow2_read_extensions): the warning (warn_report) and
// the hint printed after it (error_printf, without a newline).
const (
	StaleBitmapsWarning   = "a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent"
	StaleBitmapsWarningV2 = "This qcow2 v2 image contains bitmaps, but they may have been modified by a program without persistent bitmap support; so now they must all be considered inconsistent"
	StaleBitmapsHint      = "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix."
)

// OpenWarning is a warning an open reports through Options.Warn, as
// QEMU reports it when it opens the image: QEMU prints
// "<program>: warning: " + Message + "\n" on stderr (warn_report), then
// Hint as it is (error_printf: no newline; empty for none).
type OpenWarning struct {
	Path    string // the image's file (Options.Path for OpenDevice; may be empty)
	Message string
	Hint    string
}

// staleBitmapsExts counts the bitmaps extensions of a header whose
// autoclear bit says they are stale.
func staleBitmapsExts(h *format.Header) int {
	if h.AutoclearFeatures&format.AutoclearBitmaps != 0 {
		return 0
	}
	n := 0
	for _, e := range h.Extensions {
		if e.Type == format.ExtBitmaps {
			n++
		}
	}
	return n
}

// warnStaleBitmaps reports QEMU's open warning for stale bitmaps, once
// per bitmaps extension as QEMU (where it reads the extensions: after
// the L1 and refcount tables, before the snapshots).
func (im *Image) warnStaleBitmaps() {
	warn := im.opts.Warn
	if warn == nil {
		return
	}
	msg := StaleBitmapsWarning
	if im.hdr.Version < 3 {
		msg = StaleBitmapsWarningV2
	}
	for range staleBitmapsExts(im.hdr) {
		warn(OpenWarning{Path: im.path, Message: msg, Hint: StaleBitmapsHint})
	}
}

// dropStaleBitmapsExt removes from the header (in memory) the bitmaps
// extension of stale bitmaps, as a writable open of QEMU does, and
// reports whether there was one. The bitmaps' clusters stay allocated
// (leaked, for check -r to free).
func (im *Image) dropStaleBitmapsExt() bool {
	if staleBitmapsExts(im.hdr) == 0 {
		return false
	}
	im.hdr.SetExtension(format.ExtBitmaps, nil)
	return true
}
