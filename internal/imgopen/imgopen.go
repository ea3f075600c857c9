// Package imgopen opens images for the command-line tools: it maps
// qemu-img's cache modes (-t) and AIO choices (-i) to a uring.File, and the
// format (-f) to a qcow2.Image or the raw file itself. The engine never
// imports uring; this is where the binaries pick the backend.
//
// Open opens one image file, OpenSpec a stack of drivers written as QEMU
// writes it (parse.go, node.go, build.go and one driver_*.go per family of
// drivers); both return an Opened.
package imgopen

import (
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Spec says how to open one image.
type Spec struct {
	Path     string
	Format   string // "qcow2", "raw", or "" to probe
	ReadOnly bool
	// Cache is qemu-img's -t: none (O_DIRECT), writeback (default),
	// writethrough, directsync, unsafe.
	Cache string
	// AIO is -i: io_uring (default), io_uring-nomerge (no merging of
	// adjacent requests: to measure what it buys) or threads.
	AIO string
	// Engine options for qcow2 images (l2-cache-size, prealloc, ...).
	Opts qcow2.Options
	// WrapFile, if set, stands in front of the image's own host file (not
	// a backing file's) before the format driver opens it: tests slow down
	// or count the host requests with it. Open only.
	WrapFile func(block.Device) block.Device
}

// FileOptions maps cache and aio to uring options.
func FileOptions(cache, aio string, readOnly bool) (uring.Options, error) {
	o := uring.Options{ReadOnly: readOnly}
	switch cache {
	case "", "writeback", "writethrough", "unsafe":
	case "none", "directsync":
		o.Direct = true
	default:
		return o, fmt.Errorf("invalid cache mode %q (none, writeback, writethrough, directsync, unsafe)", cache)
	}
	switch aio {
	case "", "io_uring", "native":
		o.Backend = uring.Auto
	case "io_uring-nomerge":
		o.Backend, o.NoMerge = uring.Auto, true
	case "threads":
		o.Backend = uring.Threads
	default:
		return o, fmt.Errorf("invalid aio %q (io_uring, io_uring-nomerge, threads)", aio)
	}
	return o, nil
}

// Opener returns a qcow2.Opener for the cache mode and AIO.
func Opener(cache, aio string) (qcow2.Opener, error) {
	fo, err := FileOptions(cache, aio, false)
	if err != nil {
		return nil, err
	}
	return func(path string, readOnly bool) (block.Device, error) {
		o := fo
		o.ReadOnly = readOnly
		f, err := uring.Open(path, o)
		if err != nil {
			return nil, err
		}
		return f, nil
	}, nil
}

// Open opens the image at s.Path: a qcow2 image (Image set, and the
// device) or a raw file.
func Open(s Spec) (*Opened, error) {
	op, err := Opener(s.Cache, s.AIO)
	if err != nil {
		return nil, err
	}
	if s.WrapFile != nil {
		op = wrapFirst(op, s.Path, s.WrapFile)
	}
	f := s.Format
	if f == "" {
		if f, err = qcow2.Probe(s.Path); err != nil {
			return nil, err
		}
	}
	switch f {
	case "qcow2":
		o := s.Opts
		o.Opener = op
		o.ReadOnly = s.ReadOnly || o.ReadOnly
		im, err := qcow2.Open(s.Path, o)
		if err != nil {
			return nil, err
		}
		file, _ := im.Device().(*uring.File)
		return &Opened{Dev: im, Image: im, File: file}, nil
	case "raw":
		d, err := op(s.Path, s.ReadOnly)
		if err != nil {
			return nil, err
		}
		file, _ := d.(*uring.File)
		return &Opened{Dev: d, File: file}, nil
	}
	return nil, fmt.Errorf("unknown format %q (qcow2, raw)", f)
}

// wrapFirst is op with wrap in front of the first device it opens for
// path: the image's own file (a qcow2 image opens its file before its
// backing files).
func wrapFirst(op qcow2.Opener, path string, wrap func(block.Device) block.Device) qcow2.Opener {
	done := false
	return func(p string, readOnly bool) (block.Device, error) {
		d, err := op(p, readOnly)
		if err == nil && !done && p == path {
			done = true
			d = wrap(d)
		}
		return d, err
	}
}
