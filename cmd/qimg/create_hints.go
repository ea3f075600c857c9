package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/qring/qring/qcow2"
)

// This file holds QEMU's file driver create options, nocow and
// extent_size_hint, which qemu-img create and convert -o take for every
// format (qcow2.FileHints): qemu-img sets a 1 MiB extent size hint on
// every file it creates unless told otherwise, and so does qimg.

// fileHintOptions are the two, as -o help lists them.
var fileHintOptions = []createOption{
	{"extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"},
	{"nocow", "bool (on/off)", "Turn off copy-on-write (valid only on btrfs)"},
}

// withHints is a format's create options with the file driver's, sorted
// by name as -o help lists them.
func withHints(opts []createOption) []createOption {
	out := append(slices.Clip(opts), fileHintOptions...)
	slices.SortFunc(out, func(a, b createOption) int { return cmp.Compare(a.name, b.name) })
	return out
}

// isHintOption reports whether k is nocow or extent_size_hint.
func isHintOption(k string) bool {
	return slices.ContainsFunc(fileHintOptions, func(c createOption) bool { return c.name == k })
}

// setHintOption sets nocow or extent_size_hint from -o, checked as QEMU's
// option parser checks them (a size up to 2^64-1: past 2^32-1 it is
// refused when the file is created, "Extent size hint is too large").
func (req *createRequest) setHintOption(k, v string) error {
	h := &req.opts.Hints
	switch k {
	case "nocow":
		v, err := checkOptionType(fileHintOptions, k, v)
		if err != nil {
			return err
		}
		h.NoCOW = v == "on"
	case "extent_size_hint":
		n, err := qcow2.ParseSizeFull(v)
		if err != nil {
			return fmt.Errorf("Parameter '%s' %s", k, errSizeParam)
		}
		req.hintSize = n
		switch {
		case n == 0:
			h.ExtentSizeHint = -1 // no hint
		case n > math.MaxInt64:
			h.ExtentSizeHint = math.MaxInt64 // refused as too large
		default:
			h.ExtentSizeHint = int64(n)
		}
	}
	req.given[k] = true
	return nil
}

// nocowShown and hintShown are the Formatting line's words for the
// options given (empty when not given).
func (req *createRequest) nocowShown() string {
	if !req.given["nocow"] {
		return ""
	}
	return " nocow=" + onOff(req.opts.Hints.NoCOW)
}

func (req *createRequest) hintShown() string {
	if !req.given["extent_size_hint"] {
		return ""
	}
	return fmt.Sprintf(" extent_size_hint=%d", req.hintSize)
}
