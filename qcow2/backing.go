package qcow2

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/protocol"
)

// openBacking opens the backing file the options or the header name
// (backingPath: relative names against the image's directory, a
// protocol prefix as QEMU reads it) and records its size.
func (im *Image) openBacking() error {
	h := im.hdr
	if im.opts.Backing != nil {
		im.backing = im.opts.Backing
	} else if h.BackingFile == "" && im.opts.BackingOptions != nil && !im.opts.NoBacking {
		// Options for a backing file there is none of: QEMU's words
		// (its backing node would need a driver and a file of its own).
		return &BackingError{Err: errors.New("Must specify either driver or file")}
	} else if isSpecName(h.BackingFile) && im.opts.OpenBacking != nil && !im.opts.NoBacking {
		if err := im.openSpecBacking(); err != nil {
			return err
		}
	} else if h.BackingFile != "" && !im.opts.NoBacking {
		name, err := im.resolveBacking(h.BackingFile)
		if err != nil {
			return err
		}
		op := im.opts.Opener
		if op == nil {
			op = DefaultOpener
		}
		above, err := im.chainAbove(name)
		if err != nil {
			return err
		}
		d, err := OpenFormat(name, h.BackingFormat, Options{ReadOnly: true, Opener: op, OpenBacking: im.opts.OpenBacking,
			L2CacheSize: im.opts.L2CacheSize, CacheCleanInterval: im.opts.CacheCleanInterval,
			NoLock: im.opts.NoLock, ForceShare: im.opts.ForceShare && im.ro, asBacking: true, above: above, Check: im.opts.Check,
			specDepth: im.opts.specDepth, given: im.opts.BackingOptions, Warn: im.opts.Warn})
		if err != nil {
			return &BackingError{File: h.BackingFile, Err: err}
		}
		im.backing = d
		im.ownBacking = true
	}
	if im.backing != nil {
		n, err := im.backing.Size()
		if err != nil {
			im.closeBacking()
			return err
		}
		_, isImage := im.backing.(*Image)
		if _, isLayer := im.backing.(Layer); !isImage && !isLayer {
			n = sectorLen(n) // a raw file, as QEMU measures one
		}
		im.bsize = n
		im.bzero, _ = im.backing.(zeroProber)
		if dm, ok := im.backing.(block.DataMapper); ok && im.bzero == nil {
			im.bzero = holeProber{dm}
		}
	}
	return nil
}

// isSpecName says a backing file name is a "json:{...}" spec: QEMU's
// pseudo-protocol, a driver tree with its own file names (relative to the
// working directory, as QEMU reads them); or an NBD export's name, which
// the tools' opener connects to as it does a spec's nbd node.
func isSpecName(name string) bool { return strings.HasPrefix(name, "json:") || protocol.IsNBD(name) }

// openSpecBacking opens a json: backing file name through
// Options.OpenBacking (the tools' spec opener; the engine parses no
// specs), read-only, with the chain above it so that a spec naming a file
// already in the chain is ErrBackingLoop when that file opens (Q23).
func (im *Image) openSpecBacking() error {
	h := im.hdr
	if im.opts.BackingOptions != nil {
		// QEMU merges them into the spec's own; not done here.
		return &BackingError{File: h.BackingFile, Err: errors.New("backing.* options are not supported with a json: backing file name")}
	}
	if im.opts.specDepth >= maxSpecDepth {
		return &BackingError{File: h.BackingFile, Err: fmt.Errorf("%w: more than %d json: backing files", ErrBackingLoop, maxSpecDepth)}
	}
	above := slices.Clip(im.opts.above)
	if im.path != "" {
		if fi, err := os.Stat(im.path); err == nil {
			above = append(above, fi)
		}
	}
	d, err := im.opts.OpenBacking(h.BackingFile, h.BackingFormat, Options{ReadOnly: true, Opener: im.opts.Opener,
		OpenBacking: im.opts.OpenBacking, L2CacheSize: im.opts.L2CacheSize, CacheCleanInterval: im.opts.CacheCleanInterval,
		NoLock: im.opts.NoLock, ForceShare: im.opts.ForceShare && im.ro, asBacking: true, above: above, Check: im.opts.Check,
		specDepth: im.opts.specDepth + 1, Warn: im.opts.Warn})
	if err != nil {
		return &BackingError{File: h.BackingFile, Err: err}
	}
	im.backing = d
	im.ownBacking = true
	return nil
}

// maxSpecDepth bounds the json: backing names in one chain (see
// Options.specDepth).
const maxSpecDepth = 64

// checkNotAbove refuses an image whose file is already in the chain above
// it (ErrBackingLoop): a backing file opened by name was checked before
// it opened (chainAbove); one a json: spec names is checked here.
func (im *Image) checkNotAbove() error {
	if len(im.opts.above) == 0 || im.path == "" {
		return nil
	}
	fi, err := os.Stat(im.path)
	if err != nil {
		return nil
	}
	for _, a := range im.opts.above {
		if os.SameFile(a, fi) {
			return fmt.Errorf("%w: %q", ErrBackingLoop, im.path)
		}
	}
	return nil
}

// backingPath is the host file a header's backing file name stands for,
// as QEMU 7.2 reads it (bdrv_make_absolute_filename, then
// bdrv_find_protocol): a name with a protocol prefix (internal/protocol:
// "file:" stripped, other protocols refused) is taken as it is, relative
// to the working directory; any other relative name is relative to the
// image's directory (image, a host path).
func backingPath(name, image string) (string, error) {
	if isSpecName(name) {
		// A JSON spec, or an NBD export: only the tools' opener
		// reads it (Options.OpenBacking; openSpecBacking).
		return "", fmt.Errorf("a json: or NBD backing file name needs a spec opener (Options.OpenBacking): %q", name)
	}
	p, err := protocol.Path(name, false)
	if err != nil || protocol.HasPrefix(name) || filepath.IsAbs(p) || image == "" {
		return p, err
	}
	return filepath.Join(filepath.Dir(image), p), nil
}

// BackingOptions are the options the image was opened with for its
// backing file (Options.BackingOptions): for a program that opens the
// backing file itself, as a commit opens its base.
func (im *Image) BackingOptions() *BackingOptions { return im.opts.BackingOptions }

// Path is the host file the image is stored in, as Open was given it (or
// Options.Path for OpenDevice; "" when unknown).
func (im *Image) Path() string { return im.path }

// BackingPath is the host file the header's backing file name stands
// for, as Open resolves it (relative names against the image's
// directory, a protocol prefix as QEMU reads it): "" for an image with no
// backing file, and a json: name as it is (a spec, not a path). It is an
// error when the name cannot be resolved: a relative name in an image
// stored in a node with no directory (Options.NoBaseDir), or a protocol
// qring does not open.
func (im *Image) BackingPath() (string, error) {
	name := im.Header().BackingFile
	if name == "" || isSpecName(name) {
		return name, nil
	}
	return im.resolveBacking(name)
}

// resolveBacking is BackingPath for a plain (not json:) name, its errors
// those openBacking returns.
func (im *Image) resolveBacking(file string) (string, error) {
	name, err := backingPath(file, im.path)
	if err != nil {
		return "", &BackingError{File: file, Err: err}
	}
	if im.path == "" && im.opts.NoBaseDir != nil && !protocol.HasPrefix(file) && !filepath.IsAbs(name) {
		return "", im.opts.NoBaseDir // QEMU's words, without its backing-file prefix
	}
	return name, nil
}

// closeBacking closes a backing device the image opened. The field is
// left as it is: reads that passed the closed check before Close read it
// without a lock, and get the closed device's ErrClosed instead.
// chainAbove is the chain of files above the backing file name: the
// image's own and those above it. A name that is one of them is
// ErrBackingLoop (os.SameFile: any path to the same file).
func (im *Image) chainAbove(name string) ([]os.FileInfo, error) {
	above := slices.Clip(im.opts.above)
	if im.path != "" {
		if fi, err := os.Stat(im.path); err == nil {
			above = append(above, fi)
		}
	}
	if fi, err := os.Stat(name); err == nil {
		for _, a := range above {
			if os.SameFile(a, fi) {
				return nil, fmt.Errorf("%w: %q", ErrBackingLoop, im.hdr.BackingFile)
			}
		}
	}
	return above, nil
}

func (im *Image) closeBacking() {
	if im.ownBacking && im.backing != nil {
		im.backing.Close()
	}
}

// OpenFormat opens path as format fmt ("qcow2", "raw", or "" to probe).
// A raw file is returned as the device itself; any other format, named
// or probed, is a *FormatError.
func OpenFormat(path, fmtName string, o Options) (block.Device, error) {
	op := o.Opener
	if op == nil {
		op = DefaultOpener
	}
	probed := fmtName == ""
	if probed {
		var err error
		fmtName, err = Probe(path)
		if err != nil {
			return nil, err
		}
	}
	given := o.given
	given.Apply(&o, fmtName)
	d, err := openFormat(path, fmtName, probed, op, o)
	if err != nil {
		return nil, err
	}
	if err := given.check(fmtName); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// openFormat is OpenFormat once the format is known.
func openFormat(path, fmtName string, probed bool, op Opener, o Options) (block.Device, error) {
	switch fmtName {
	case "qcow2":
		return Open(path, o)
	case "raw":
		d, err := op(path, o.ReadOnly)
		if err != nil {
			return nil, err
		}
		if err := lockDevice(d, path, FormatRaw, o); err != nil {
			d.Close()
			return nil, err
		}
		return d, nil
	}
	if o.OpenBacking != nil && o.asBacking {
		// Another format under a qcow2 image (Q23), with the key and
		// backing options given for it.
		return o.OpenBacking(path, fmtName, Options{ReadOnly: true, Opener: op, OpenBacking: o.OpenBacking,
			NoLock: o.NoLock, ForceShare: o.ForceShare, Passphrase: o.Passphrase, NoBacking: o.NoBacking})
	}
	return nil, &FormatError{Format: fmtName, Probed: probed}
}

// sectorLen is the length QEMU's block layer gives a raw file of n
// bytes: whole 512-byte sectors, the last one's tail reading as zeros.
func sectorLen(n int64) int64 { return (n + 511) &^ 511 }

// RawLen is sectorLen for the packages that report a raw backing
// file's allocation (the NBD server's qemu:allocation-depth).
func RawLen(n int64) int64 { return sectorLen(n) }
