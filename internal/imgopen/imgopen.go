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
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	vhdformat "github.com/qring/qring/vhd/format"
)

// Spec says how to open one image.
type Spec struct {
	Path string
	// Name is what messages call the image when it is not Path: the
	// --image-opts argument that ImageOpts turned into a json: Path.
	Name string
	// QemuName, if set, is what qemu-img info calls an --image-opts
	// image whose strong options (a qcow2 image's encrypt.key-secret)
	// make QEMU name it by the JSON of its options (qemuname.go), not
	// by its file (Path).
	QemuName string
	Format   string // "qcow2", "raw", "vpc" (vhd.go), "vmdk" (vmdk.go), or "" to probe (another format probed is a *qcow2.FormatError)
	// Probed says Format was found by probing already (ImageOpts without
	// driver=): a raw image is Opened.ProbedRaw as if Format were "".
	Probed   bool
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
	// Secrets holds the --object secrets that encrypt.key-secret options
	// of a spec name (OpenSpec, ImageOpts; encrypt.go).
	Secrets *secret.Store
	// UnshareResize: no one else may resize a raw image's host file while
	// it is open (an NBD export's, whose clients were told its size); see
	// openRaw. Opts.NoLock and Opts.ForceShare take precedence.
	UnshareResize bool
	// DataFile, for a qcow2 image, is the external data file to use in
	// place of the one its header names (QEMU's data-file.filename;
	// qcow2 DF1), opened and locked here. Open only.
	DataFile string
	// SizeCalc is a VHD image's force_size_calc (QEMU's vpc option; an
	// image spec's). Open only.
	SizeCalc vhdformat.SizeCalc
}

// FileOptions maps cache and aio to uring options. An explicit io_uring
// (or io_uring-nomerge) asks for the ring and nothing else (uring.Ring:
// opening fails with a RingError where no ring can be set up, as QEMU's
// aio=io_uring does); the default ("") is uring.Auto, which falls back to
// threads and says why (Opened.Backend). native (QEMU's Linux AIO) is
// refused: qring has no such backend.
func FileOptions(cache, aio string, readOnly bool) (uring.Options, error) {
	o := uring.Options{ReadOnly: readOnly}
	switch cache {
	case "", "writeback", "writethrough":
	case "unsafe":
		o.NoFlush = true // as QEMU's BDRV_O_NO_FLUSH
	case "none", "directsync":
		o.Direct = true
	case cacheDirectNoFlush: // cache.direct=on,cache.no-flush=on (cachekeys.go)
		o.Direct, o.NoFlush = true, true
	default:
		return o, fmt.Errorf("invalid cache mode %q (none, writeback, writethrough, directsync, unsafe)", cache)
	}
	switch aio {
	case "":
		o.Backend = uring.Auto
	case "io_uring":
		o.Backend = uring.Ring
	case "io_uring-nomerge":
		o.Backend, o.NoMerge = uring.Ring, true
	case "threads":
		o.Backend = uring.Threads
	case "native":
		return o, ErrNativeAIO
	default:
		return o, fmt.Errorf("invalid aio %q (io_uring, io_uring-nomerge, threads)", aio)
	}
	return o, nil
}

// Opener returns a qcow2.Opener for the cache mode and AIO.
func Opener(cache, aio string) (qcow2.Opener, error) {
	return opener(cache, aio, nil)
}

// opener is Opener; when the default backend falls back to threads, it
// stores why in *fellBack (if not nil).
func opener(cache, aio string, fellBack *string) (qcow2.Opener, error) {
	fo, err := FileOptions(cache, aio, false)
	if err != nil {
		return nil, err
	}
	return func(path string, readOnly bool) (block.Device, error) {
		if err := checkFileType(path); err != nil {
			return nil, err
		}
		o := fo
		o.ReadOnly = readOnly
		if o.Backend != uring.Threads {
			if err := probeRing(); err != nil {
				if o.Backend == uring.Ring {
					return nil, &RingError{Err: err}
				}
				// What uring.Open would do itself, said here so that a
				// test can simulate it (probeRing).
				o.Backend = uring.Threads
				if fellBack != nil {
					*fellBack = "io_uring unavailable: " + err.Error()
				}
			}
		}
		f, err := uring.Open(path, o)
		if err != nil {
			return nil, err
		}
		if fellBack != nil && f.Backend() == uring.Threads && fo.Backend == uring.Auto && *fellBack == "" {
			*fellBack = f.BackendReason()
		}
		return f, nil
	}, nil
}

// probeRing reports why no io_uring ring can be set up here (nil when one
// can); tests replace it to simulate a kernel or seccomp profile without
// io_uring.
var probeRing = func() error { return uring.ProbeRing().Err }

// Open opens the image at s.Path: a qcow2 image (Image set, and the
// device) or a raw file.
func Open(s Spec) (*Opened, error) {
	var fellBack string
	op, err := opener(s.Cache, s.AIO, &fellBack)
	if err != nil {
		return nil, err
	}
	if err := checkFileType(s.Path); err != nil {
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
		if f != "qcow2" && f != "raw" && f != "vpc" && f != "vmdk" && f != "luks" {
			return nil, &qcow2.FormatError{Format: f, Probed: true}
		}
	}
	switch f {
	case "qcow2":
		o := s.Opts
		o.Opener = op
		ts := &throttleSet{secrets: s.Secrets}
		o.OpenBacking = ts.openLayer
		o.ReadOnly = s.ReadOnly || o.ReadOnly
		o.RefuseCorrupt = true // a writable open, as QEMU's
		data, err := openDataFile(s.DataFile, op, o)
		if err != nil {
			return nil, err
		}
		o.DataDevice = data
		im, err := qcow2.Open(s.Path, o)
		if err != nil {
			if data != nil {
				data.Close()
			}
			return nil, err
		}
		file, _ := im.Device().(*uring.File)
		opened := &Opened{Dev: im, Image: im, File: file, fellBack: fellBack, throttles: ts}
		if data != nil {
			opened.close = func() error { return errors.Join(im.Close(), data.Close()) }
		}
		return opened, nil
	case "raw":
		d, err := openRaw(s.Path, op, s.ReadOnly || s.Opts.ReadOnly, s.Opts, s.UnshareResize)
		if err != nil {
			return nil, err
		}
		file, _ := d.(*uring.File)
		if d, err = sectorSized(d); err != nil {
			return nil, err
		}
		o := &Opened{Dev: d, File: file, fellBack: fellBack, RawFile: s.Path}
		if s.Format == "" || s.Probed {
			o.ProbedRaw = s.Path
		}
		return o, nil
	case "vpc":
		return openVPC(s, op, fellBack)
	case "vmdk":
		return openVMDK(s, op, fellBack)
	case "luks":
		return openLUKS(s, op, fellBack)
	}
	return nil, &DriverError{Name: f}
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

// sectorSized is a raw device whose length is not a multiple of 512
// behind a raw layer that rounds it up (filter.RawOptions.Sectors), as
// qemu-img shows and serves such a file; other devices are left as they
// are, with their fast paths.
func sectorSized(d block.Device) (block.Device, error) {
	n, err := d.Size()
	if err != nil {
		d.Close()
		return nil, err
	}
	if n%512 == 0 {
		return d, nil
	}
	r, err := filter.NewRaw(d, filter.RawOptions{Sectors: true})
	if err != nil {
		d.Close()
		return nil, err
	}
	return r, nil
}
