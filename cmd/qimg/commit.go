package main

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

func runCommit(e *env, args []string) int {
	o, err := getopt(args, "f:t:dpqU", "object:", "image-opts", "force-share")
	if err != nil {
		return e.usageErr(err)
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting one image file name"))
	}
	var progress func(done, total int64)
	if o.has("p") && !o.has("q") {
		progress = progressPrinter(e.stdout)
	}
	spec, err := o.imageSpec(o.args[0], imgopen.Spec{Format: o.get("f", ""), Cache: o.get("t", "")})
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	err = doCommit(spec, o.has("d"), progress)
	if progress != nil {
		fmt.Fprintln(e.stdout)
	}
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	if !o.has("q") {
		fmt.Fprintln(e.stdout, "Image committed.")
	}
	return 0
}

var errNoBacking = errors.New("Image does not have a backing file")

// doCommit writes what the image of spec (a file, or --image-opts: a
// LUKS overlay with its key) allocates itself into its backing file
// (data as data, zero clusters as zeros), then, unless keep (-d), empties
// path as qemu-img 7.2 does, so that the chain reads the same: once the
// data is durable in the backing file, every cluster of the image
// becomes unallocated in place (Image.MakeEmpty); its header, features
// and internal snapshots stay.
func doCommit(spec imgopen.Spec, keep bool, progress func(done, total int64)) error {
	spec.Opts.NoBacking = true
	ro := spec
	ro.ReadOnly = true
	path, cache := spec.Path, spec.Cache
	top, err := openImage(ro)
	if err != nil {
		return err
	}
	im := top.Image
	if im == nil || im.Header().BackingFile == "" {
		top.Close()
		return errNoBacking
	}
	if err := im.Damage(); err != nil {
		// Opened read-only, a damaged image opens (Q19); committing
		// it would empty it afterwards.
		top.Close()
		return err
	}
	h := im.Header()
	bpath := pathCombine(path, h.BackingFile)
	base, err := openImage(imgopen.Spec{Path: bpath, Format: h.BackingFormat, Cache: cache})
	if err != nil {
		top.Close()
		return err
	}
	err = commitInto(im, base, progress)
	if err == nil {
		// Durable in the backing file before the image lets go of it.
		err = base.Dev.Flush()
	}
	if cerr := base.Close(); err == nil {
		err = cerr
	}
	if cerr := top.Close(); err == nil {
		err = cerr
	}
	if err != nil || keep {
		return err
	}
	return makeEmpty(spec)
}

// commitInto copies the ranges im allocates into base, growing base to
// im's size first if it is shorter (as QEMU's commit job). progress, if
// set, is called with the bytes done.
func commitInto(im *qcow2.Image, base *imgopen.Opened, progress func(done, total int64)) error {
	size, err := im.Size()
	if err != nil {
		return err
	}
	bsize, err := base.Dev.Size()
	if err != nil {
		return err
	}
	if bsize < size {
		if err := base.Dev.Truncate(size); err != nil {
			return fmt.Errorf("Could not resize the backing file: %w", err)
		}
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for off := int64(0); off < size; {
		if progress != nil {
			progress(off, size)
		}
		st, err := im.BlockStatus(off, size-off)
		if err != nil {
			return err
		}
		end := st.Off + st.Len
		switch {
		case !st.Allocated:
		case st.Zero:
			err = base.Dev.WriteZeroes(off, end-off, block.MayUnmap)
			if errors.Is(err, block.ErrNotSupported) {
				clear(buf)
				err = eachChunk(off, end-off, buf, func(o int64, b []byte) error { return base.Dev.Writev(o, [][]byte{b}) })
			}
		default:
			err = eachChunk(off, end-off, buf, func(o int64, b []byte) error {
				if err := im.Readv(o, [][]byte{b}); err != nil {
					return err
				}
				return base.Dev.Writev(o, [][]byte{b})
			})
		}
		if err != nil {
			return err
		}
		off = end
	}
	if progress != nil {
		progress(size, size)
	}
	return base.Dev.Flush()
}

// makeEmpty opens the committed image for writing and makes all of it
// unallocated (QEMU's bdrv_make_empty after a commit).
func makeEmpty(spec imgopen.Spec) error {
	top, err := openImage(spec)
	if err != nil {
		return err
	}
	err = top.Image.MakeEmpty()
	if cerr := top.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Could not empty %s: %w", spec.Path, err)
	}
	return nil
}
