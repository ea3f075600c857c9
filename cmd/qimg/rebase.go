package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// rebaseRequest is a parsed qimg rebase command line.
type rebaseRequest struct {
	path, format string
	spec         imgopen.Spec // the image: path, format and cache, or --image-opts
	backing      string       // new backing file name as written into the header ("" removes it)
	backingFmt   string
	unsafe       bool
	cache        cacheMode     // -t: the image's
	srcCache     cacheMode     // -T: the new backing file's
	progress     *qemuProgress // -p, or nil
	warn         io.Writer     // where a probed raw image's warning goes (GuardProbed)
}

func runRebase(e *env, args []string) int {
	o, err := e.getopt(args, "f:F:b:t:T:upqU", "object:", "image-opts", "force-share")
	if err != nil {
		return e.usageErr(err)
	}
	r := &rebaseRequest{format: o.get("f", ""), backing: o.get("b", ""), backingFmt: o.get("F", ""),
		unsafe: o.has("u"), warn: e.stderr}
	if !r.unsafe && !o.has("b") {
		return e.usageErr(errors.New("Must specify backing file (-b) or use unsafe mode (-u)"))
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting one image file name"))
	}
	// -p: from here on, qemu-img prints its 0% first and a new line
	// last, whatever happens; 100% once rebased.
	if o.has("p") && !o.has("q") {
		r.progress = &qemuProgress{w: e.stdout, minSkip: 2}
		r.progress.print(0, 100)
		defer fmt.Fprintln(e.stdout)
	}
	if r.cache, err = o.cacheOpt(false); err != nil {
		return e.errorf(1, "%v", err)
	}
	if r.srcCache, err = o.cacheOpt(true); err != nil {
		return e.errorf(1, "%v", err)
	}
	if r.spec, err = o.imageSpec(o.args[0], imgopen.Spec{Format: r.format, Cache: r.cache.imgopen()}); err != nil {
		return e.errorf(1, "%v", err)
	}
	r.spec.WrapFile = r.cache.wrapFile()
	r.path, r.format = r.spec.Path, r.spec.Format
	if err := doRebase(r); err != nil {
		return e.errorf(1, "%v", err)
	}
	if r.progress != nil {
		r.progress.print(100, 0)
	}
	return 0
}

// doRebase changes the backing file of r.path. Safe mode first copies
// into the image every sector that it does not allocate itself and where
// the old and the new backing chains differ (qemu-img's algorithm), so
// that the guest sees the same data afterwards; -u only rewrites the
// header. Unlike qemu-img 7.2, a missing -F is refused before anything
// is copied, not after.
func doRebase(r *rebaseRequest) error {
	var invalidFmt error // a name QEMU knows no format of: refused once the image is open, as qemu-img
	switch r.backingFmt {
	case "", "qcow2", "raw", "vmdk", "vpc", "luks": // vmdk, vpc and luks read-only, as a qcow2 image's backing file (Q23)
	default:
		if !imgopen.QemuDriver(r.backingFmt) {
			invalidFmt = fmt.Errorf("Invalid format name: '%s'", r.backingFmt)
			break
		}
		return fmt.Errorf("Could not open new backing file '%s': unknown file format '%s' (qcow2, raw, vmdk, vpc)", r.backing, r.backingFmt)
	}
	spec := r.spec
	spec.Opts.NoBacking = r.unsafe
	if r.unsafe {
		if err := refuseBackingOptions(spec); err != nil {
			return err
		}
	}
	img, err := openImage(spec)
	if r.unsafe && errors.Is(err, imgopen.ErrVMDKReadOnly) {
		// A VMDK snapshot is written only over its parent, which -u
		// does not open; its driver cannot change a backing file
		// anyway, qemu-img's error (after a missing -F's).
		why := "Operation not supported"
		if r.backing != "" && r.backingFmt == "" {
			why = "backing format must be specified"
		}
		return fmt.Errorf("Could not change the backing file to '%s': %s", r.backing, why)
	}
	if err != nil {
		return err
	}
	if invalidFmt != nil {
		img.Close()
		return invalidFmt
	}
	img.GuardProbed(r.warn) // a probed raw image opened writable: QEMU's warning
	err = rebaseOpen(img, r)
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	return err
}

// rebaseOpen is doRebase on the open image.
func rebaseOpen(img *imgopen.Opened, r *rebaseRequest) error {
	changeErr := func(err error) error {
		return fmt.Errorf("Could not change the backing file to '%s': %w", r.backing, err)
	}
	// qemu-img opens the new backing file (probing it without -F)
	// before it copies, then finds -F missing before it finds that the
	// image's driver cannot change its backing file (raw, vpc, vmdk):
	// a file that does not open is the first error there too.
	if img.Image == nil || r.backingFmt == "" {
		if !r.unsafe && r.backing != "" {
			nimg, err := openImage(imgopen.Spec{Path: pathCombine(r.path, r.backing), Format: r.backingFmt, Cache: r.srcCache.imgopen(), ReadOnly: true,
				Secrets: r.spec.Secrets})
			if err != nil {
				return fmt.Errorf("Could not open new backing file '%s': %w", r.backing, errors.Unwrap(err))
			}
			nimg.Close()
		}
		if r.backing != "" && r.backingFmt == "" {
			return changeErr(errors.New("backing format must be specified"))
		}
	}
	if img.Image == nil {
		return changeErr(errors.New("Operation not supported"))
	}
	if !r.unsafe {
		if err := rebaseCopy(img.Image, r); err != nil {
			return err
		}
	}
	if err := img.Image.SetBacking(r.backing, r.backingFmt); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			err = cError(syscall.EINVAL) // qemu-img says only "Invalid argument"
		}
		return changeErr(err)
	}
	return nil
}

// rebaseCopy writes into im what its new backing chain would show
// differently, where im has no data of its own.
func rebaseCopy(im *qcow2.Image, r *rebaseRequest) error {
	var nb block.Device // nil: the new backing reads as zeros
	var nsize int64
	if r.backing != "" {
		p := pathCombine(r.path, r.backing)
		nimg, err := openImage(imgopen.Spec{Path: p, Format: r.backingFmt, Cache: r.srcCache.imgopen(), ReadOnly: true,
			Secrets: r.spec.Secrets}) // a json: backing file's key-secret
		if err != nil {
			return fmt.Errorf("Could not open new backing file '%s': %w", r.backing, errors.Unwrap(err))
		}
		defer nimg.Close()
		nb = nimg.Dev
		if nsize, err = nb.Size(); err != nil {
			return err
		}
	}
	size, err := im.Size()
	if err != nil {
		return err
	}
	// Past the old backing file's end the old view is zeros: where the
	// new one differs, zeros are written as zeroing (zero clusters), as
	// qemu-img does, not as data. A version 2 image has no zero
	// clusters: without a backing file its zeroing leaves clusters
	// unallocated, which the new backing file would show through (so
	// would qemu-img 7.2's), so zeros are written as data there.
	zeroing := im.Header().Version >= 3
	var osize int64
	if ob := im.Backing(); ob != nil {
		if osize, err = ob.Size(); err != nil {
			return err
		}
	}
	w := withCache(im, r.cache) // the writes: flushed each in writethrough
	// qemu-img's walk: up to 2 MiB at a time, cut where the image's own
	// allocation changes (bdrv_is_allocated, QEMU's status lengths);
	// -p moves on by 100 / (size / 2 MiB) percent after each stretch
	// the image leaves to its backing file.
	const ioBuf = 2 << 20
	var step float32
	if size != 0 {
		step = float32(100) / float32(size/min(size, ioBuf))
	}
	sw := qcow2.NewStatusWalker(im)
	oldBuf, newBuf := make([]byte, ioBuf), make([]byte, ioBuf)
	for off := int64(0); off < size; {
		st, err := sw.TopStatus(off, min(ioBuf, size-off))
		if err != nil {
			return err
		}
		n := min(max(st.Len, 1), ioBuf, size-off)
		if st.Allocated {
			off += n
			continue
		}
		// As qemu-img, a read stops at the end of either backing file.
		if off < osize {
			n = min(n, osize-off)
		}
		if nb != nil && off < nsize {
			n = min(n, nsize-off)
		}
		ob, nbuf := oldBuf[:n], newBuf[:n]
		if err := im.Readv(off, [][]byte{ob}); err != nil {
			return err
		}
		clear(nbuf)
		if nb != nil && off < nsize {
			if err := nb.Readv(off, [][]byte{nbuf}); err != nil {
				return err
			}
		}
		if err := writeDiffering(w, off, ob, nbuf, zeroing && off >= osize); err != nil {
			// qemu-img's words: the step and the errno.
			return fmt.Errorf("Error while writing to COW image: %s", strerror(err))
		}
		off += n
		if r.progress != nil {
			r.progress.print(step, 100)
		}
	}
	return im.Flush()
}

// writeDiffering writes the runs of 512-byte sectors where old differs
// from cur (QEMU's compare_buffers granularity), with old's bytes, or as
// a zeroing when old is known to be all zeros (oldZero).
func writeDiffering(im block.Device, off int64, old, cur []byte, oldZero bool) error {
	const sector = 512
	for i := 0; i < len(old); {
		j := i
		for j < len(old) && !bytes.Equal(old[j:min(j+sector, len(old))], cur[j:min(j+sector, len(old))]) {
			j += sector
		}
		j = min(j, len(old))
		if j > i {
			var err error
			if oldZero {
				err = im.WriteZeroes(off+int64(i), int64(j-i), 0)
			} else {
				err = im.Writev(off+int64(i), [][]byte{old[i:j]})
			}
			if err != nil {
				return err
			}
			i = j
			continue
		}
		i += sector
	}
	return nil
}
