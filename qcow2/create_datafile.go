package qcow2

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/qring/qring/block"
)

// Images with an external data file at Create (QEMU 7.2's qcow2_co_create
// with data_file and data_file_raw; DF1, DF6).

// normalizeDataFile refuses what QEMU refuses of data_file and
// data_file_raw, in its words.
func (o *CreateOptions) normalizeDataFile() error {
	switch {
	case o.DataFileRaw && o.DataFile == "":
		return fmt.Errorf("%w: data-file-raw requires data-file", ErrUnsupported)
	case o.DataFile != "" && o.Compat == "0.10":
		return fmt.Errorf("%w: External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)", ErrUnsupported)
	case o.DataFileRaw && o.BackingFile != "":
		return fmt.Errorf("%w: Backing file and data-file-raw cannot be used at the same time", ErrUnsupported)
	}
	return nil
}

// sameFile reports whether paths a and b name one file: the same file
// if both exist (a link, another path), else the same path once links
// are followed (a link to a file not made yet).
func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	return resolvedPath(a) == resolvedPath(b)
}

// resolvedPath is p absolute, its links followed, also the last one to a
// file that does not exist. Nothing is cleaned before the links are
// followed: "link/.." is the link target's parent.
func resolvedPath(p string) string {
	for range 40 { // the kernel's limit of links followed
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		t, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(t) {
			t = p[:strings.LastIndex(p, "/")+1] + t // in the link's directory, as written
		}
		p = t
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	} else {
		// Not there yet: its directory's links followed.
		i := strings.LastIndex(p, "/")
		dir, base := p[:i+1], p[i+1:]
		if dir == "" {
			dir = "."
		}
		if d, err := filepath.EvalSymlinks(dir); err == nil {
			p = filepath.Join(d, base)
		}
	}
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	return p
}

// createDataFile creates the data file name (as it is: relative to the
// working directory) as QEMU's file driver creates a raw image: emptied
// once its write lock is held, then size bytes that read as zeros, its
// first block written (allocate_first_block); falloc reserves the
// space, full writes zeros over it. The hints are set while it is empty.
func createDataFile(name string, size int64, prealloc string, hints FileHints, op Opener) error {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return &DataFileCreateError{Name: name, Err: err}
	}
	f.Close()
	d, err := op(name, false)
	if err != nil {
		return &DataFileCreateError{Name: name, Err: err}
	}
	err = lockDevice(d, name, FormatRaw, Options{})
	if err == nil {
		err = d.Truncate(0)
	}
	if err == nil {
		hints.Apply(d)
		err = d.Truncate(size)
	}
	if err == nil && size > 0 {
		switch prealloc {
		case PreallocFull:
			// Zeros written out, as QEMU's full (a zeroing request
			// would leave unwritten extents: falloc's).
			err = writeZeroBufs(d, size)
		case PreallocFalloc:
			err = d.WriteZeroes(0, size, block.Allocate)
			if errors.Is(err, block.ErrNotSupported) {
				err = writeZeroBufs(d, size)
			}
		default:
			err = d.Writev(0, [][]byte{make([]byte, min(size, 4096))})
		}
	}
	if err == nil {
		err = d.Flush()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeZeroBufs writes zero buffers over the first n bytes of d.
func writeZeroBufs(d block.Device, n int64) error {
	zb := block.ZeroBuf()
	for off := int64(0); off < n; {
		k := min(int64(len(zb)), n-off)
		if err := d.Writev(off, [][]byte{zb[:k]}); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// linkDataFileClusters links every cluster of the new image at path in
// place when the data file is raw or preallocated (QEMU's metadata
// preallocation, which data_file_raw implies): the data file's bytes are
// the disk's. linked: createPreallocated has linked them (it grows the
// data file only).
func linkDataFileClusters(path string, o *CreateOptions, op Opener, linked bool) error {
	if !o.DataFileRaw && o.Preallocation == PreallocOff {
		return nil
	}
	im, err := Open(path, Options{Opener: op, PreallocSize: -1, Passphrase: o.Encrypt.Passphrase})
	if err != nil {
		return err
	}
	if !linked {
		err = im.dfLinkRange(0, o.Size)
	}
	if err == nil {
		err = im.dfGrow(im.dfPreallocEnd(o.Size))
	}
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	return err
}

// dfGrow grows the data file to at least end bytes.
func (im *Image) dfGrow(end int64) error {
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	n, err := d.Size()
	if err != nil || n >= end {
		return err
	}
	if err := d.Truncate(end); err != nil {
		return err
	}
	im.df.size.Store(end)
	return nil
}
