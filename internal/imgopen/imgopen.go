// Package imgopen opens images for the command-line tools: it maps
// qemu-img's cache modes (-t) and AIO choices (-i) to a uring.File, and the
// format (-f) to a qcow2.Image or the raw file itself. The engine never
// imports uring; this is where the binaries pick the backend.
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

// Open opens the image. For qcow2 the returned *qcow2.Image is also the
// device; for raw it is nil.
func Open(s Spec) (block.Device, *qcow2.Image, error) {
	op, err := Opener(s.Cache, s.AIO)
	if err != nil {
		return nil, nil, err
	}
	f := s.Format
	if f == "" {
		if f, err = qcow2.Probe(s.Path); err != nil {
			return nil, nil, err
		}
	}
	switch f {
	case "qcow2":
		o := s.Opts
		o.Opener = op
		o.ReadOnly = s.ReadOnly || o.ReadOnly
		im, err := qcow2.Open(s.Path, o)
		if err != nil {
			return nil, nil, err
		}
		return im, im, nil
	case "raw":
		d, err := op(s.Path, s.ReadOnly)
		return d, nil, err
	}
	return nil, nil, fmt.Errorf("unknown format %q (qcow2, raw)", f)
}
