package main

import (
	"cmp"
	"errors"
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

// filePreallocOption is the file driver's preallocation, which qemu-img
// create takes for a vmdk or vpc image too: it creates their files
// empty, so it changes nothing there (raw, qcow2 and luks have their
// own).
var filePreallocOption = createOption{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"}

// withHints is a format's create options with the file driver's, sorted
// by name as -o help lists them.
func withHints(opts []createOption, format string) []createOption {
	out := append(slices.Clip(opts), fileHintOptions...)
	if format == "vmdk" || format == "vpc" {
		out = append(out, filePreallocOption)
	}
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

// checkFilePrealloc is the file driver's check of a vmdk or vpc image's
// preallocation, made when qemu-img creates the files (after
// "Formatting").
func (req *createRequest) checkFilePrealloc() error {
	switch req.filePrealloc {
	case "", "off", "falloc", "full":
		return nil
	case "metadata":
		return errors.New("Unsupported preallocation mode: metadata")
	}
	return fmt.Errorf("invalid parameter value: %s", req.filePrealloc)
}

// preallocShown is the Formatting line's words for the file driver's
// preallocation of a vmdk or vpc image, as given.
func (req *createRequest) preallocShown() string {
	if req.filePrealloc == "" && !req.given["preallocation"] {
		return ""
	}
	return " preallocation=" + req.filePrealloc
}
