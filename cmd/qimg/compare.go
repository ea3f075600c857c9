package main

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// compareChunk is the read size of compare and convert.
const compareChunk = 1 << 20

// zeroMap answers, for increasing offsets, how far the image is known to
// read as zeros without reading it (from the map extents).
type zeroMap struct {
	ext []qcow2.MapEntry
	i   int
	// align is the device's request alignment (O_DIRECT: its logical
	// block), to which QEMU rounds a run that ends inside one.
	align int64
}

// zeroUntil returns the end of the known-zero run starting at off, or off
// itself when off is not known to be zero. Calls must not go backwards.
func (z *zeroMap) zeroUntil(off int64) int64 {
	for z.i < len(z.ext) && z.ext[z.i].Start+z.ext[z.i].Length <= off {
		z.i++
	}
	end := off
	for j := z.i; j < len(z.ext) && z.ext[j].Start <= end && z.ext[j].Zero; j++ {
		end = z.ext[j].Start + z.ext[j].Length
	}
	return end
}

// runStart is the start of the extent that holds off (0 if none does),
// as QEMU's block layer sees it: rounded down to the request alignment
// (an O_DIRECT file's EOF run starts on a block).
func (z *zeroMap) runStart(off int64) int64 {
	i := sort.Search(len(z.ext), func(i int) bool { return z.ext[i].Start+z.ext[i].Length > off })
	if i < len(z.ext) && z.ext[i].Start <= off {
		s := z.ext[i].Start
		if z.align > 1 {
			s -= s % z.align
		}
		return s
	}
	return 0
}

// sectorOf is the offset qemu-img compare reports for a mismatch at p:
// it compares a block status run of both images at a time, sector by
// sector from the run's start, so p is rounded down to a sector counted
// from there. A run starts off a sector where a raw file ends inside
// one (12340 for a 12340-byte file, where p&^511 said 12288).
func sectorOf(p int64, maps ...*zeroMap) int64 {
	start := int64(0)
	for _, z := range maps {
		start = max(start, z.runStart(p))
	}
	return start + (p-start)&^511
}

// compareResult is the outcome of compareImages.
type compareResult struct {
	Identical    bool
	SizeMismatch bool
	// StatusMismatch (strict mode): the block status of the images
	// differs at Offset before any content does.
	StatusMismatch bool
	// Offset of the first mismatch (512-byte block granularity, as qemu).
	Offset int64
}

// image is an open image with its map.
type image struct {
	dev  block.Device
	size int64
	zm   *zeroMap
	// st answers block status queries as QEMU does (compare -s,
	// convert).
	st *qcow2.StatusWalker
	// clusterSize is the qcow2 cluster size, 512 for raw: qemu-img
	// convert rounds the source's status runs down to it.
	clusterSize int64
}

func loadImage(img *imgopen.Opened) (*image, error) {
	if _, err := img.Dev.Size(); err != nil {
		return nil, err
	}
	ext, err := mapExtents(img)
	if err != nil {
		return nil, err
	}
	return newImage(img, ext)
}

// newImage is loadImage with the map ext, which may be nil (nothing
// known to read as zeros): convert --salvage of an image whose map
// cannot be read.
func newImage(img *imgopen.Opened, ext []qcow2.MapEntry) (*image, error) {
	size, err := img.Dev.Size()
	if err != nil {
		return nil, err
	}
	top := img.StatusDev()
	cs := int64(512)
	if img.Image != nil {
		top, cs = img.Image, int64(img.Image.Geometry().ClusterSize)
	} else if c := rawNodeClusterSize(img); c != 0 {
		cs = c // raw_get_info: the child's
	}
	return &image{dev: img.Dev, size: size, zm: &zeroMap{ext: ext, align: img.Dev.Caps().Align}, st: qcow2.NewStatusWalker(top), clusterSize: cs}, nil
}

// compareImages compares guest contents like qemu-img compare: the common
// part byte for byte, and the rest of the bigger image must read as zeros
// (strict: any size difference is a mismatch). Ranges both maps report as
// zero are not read.
func compareImages(a, b *image, strict bool) (compareResult, error) {
	var r compareResult
	if a.size != b.size {
		r.SizeMismatch = true
		if strict {
			return r, nil
		}
	}
	common := min(a.size, b.size)
	// Strict: the content up to the first block status mismatch decides
	// (qemu-img checks the status of each chunk before its content).
	statusAt, statusDiffers := int64(0), false
	if strict {
		var err error
		statusAt, statusDiffers, err = firstStatusMismatch(a.st, b.st, common)
		if err != nil {
			return r, err
		}
		if statusDiffers {
			common = statusAt
		}
	}
	bufA := make([]byte, compareChunk)
	bufB := make([]byte, compareChunk)
	for off := int64(0); off < common; {
		za, zb := a.zm.zeroUntil(off), b.zm.zeroUntil(off)
		if za > off && zb > off {
			off = min(za, zb, common)
			continue
		}
		n := min(int64(compareChunk), common-off)
		pa, pb := bufA[:n], bufB[:n]
		// A read that fails is narrowed to its first failing cluster
		// (qemu-img reads a run at a time): the bytes before it still
		// decide a mismatch there.
		var rerr *compareReadError
		if err := a.dev.Readv(off, [][]byte{pa}); err != nil {
			rerr = readFailure(a, 0, off, pa, err)
		}
		if err := b.dev.Readv(off, [][]byte{pb}); err != nil {
			if eb := readFailure(b, 1, off, pb, err); rerr == nil || eb.off < rerr.off {
				rerr = eb
			}
		}
		if rerr != nil {
			pa, pb = pa[:rerr.off-off], pb[:rerr.off-off]
		}
		if !bytes.Equal(pa, pb) {
			i := 0
			for pa[i] == pb[i] {
				i++
			}
			r.Offset = sectorOf(off+int64(i), a.zm, b.zm)
			return r, nil
		}
		if rerr != nil {
			return r, rerr
		}
		off += n
	}
	if statusDiffers {
		r.StatusMismatch, r.Offset = true, statusAt
		return r, nil
	}
	big := a
	if b.size > a.size {
		big = b
	}
	if at, ok, err := firstNonZero(big, common, big.size, bufA); err != nil {
		return r, err
	} else if ok {
		r.Offset = sectorOf(at, big.zm)
		return r, nil
	}
	r.Identical = true
	return r, nil
}

// compareReadError is a read that failed in compare: qemu-img's "Error
// while reading offset N of NAME: Input/output error", exit code 4.
type compareReadError struct {
	which int // 0 the first image, 1 the second, -1 the larger one
	off   int64
	err   error
}

func (e *compareReadError) Error() string {
	return fmt.Sprintf("Error while reading offset %d of %%s: %s", e.off, strerrorOf(e.err))
}

func (e *compareReadError) Unwrap() error { return e.err }

// strerrorOf is err as QEMU's block layer reports a failed read: its
// errno's text, Input/output error for a corrupt image.
func strerrorOf(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return cError(en).Error()
	}
	return "Input/output error"
}

// readFailure is the failure of a read of p at off: the chunk is read
// again cluster by cluster so that the offset named is the first failing
// cluster's (qemu-img reads an allocation run at a time).
func readFailure(im *image, which int, off int64, p []byte, err error) *compareReadError {
	cs := max(im.clusterSize, 512)
	for at := int64(0); at < int64(len(p)); {
		n := min(cs-(off+at)%cs, int64(len(p))-at)
		if e := im.dev.Readv(off+at, [][]byte{p[at : at+n]}); e != nil {
			return &compareReadError{which: which, off: off + at, err: e}
		}
		at += n
	}
	return &compareReadError{which: which, off: off, err: err}
}

// firstNonZero finds the first nonzero byte of im in [from, to).
func firstNonZero(im *image, from, to int64, buf []byte) (int64, bool, error) {
	for off := from; off < to; {
		if z := im.zm.zeroUntil(off); z > off {
			off = z
			continue
		}
		n := min(int64(len(buf)), to-off)
		p := buf[:n]
		if err := im.dev.Readv(off, [][]byte{p}); err != nil {
			return 0, false, readFailure(im, -1, off, p, err)
		}
		for i, c := range p {
			if c != 0 {
				return off + int64(i), true, nil
			}
		}
		off += n
	}
	return 0, false, nil
}

func runCompare(e *env, args []string) int {
	o, err := e.getopt(args, "f:F:T:sqpU", "force-share", "object:", "image-opts")
	if err != nil {
		return e.usageErr(err) // exit 1, as qemu-img's usage errors
	}
	if len(o.args) != 2 {
		return e.usageErr(fmt.Errorf("Expecting two image file names"))
	}
	// -p: qemu-img's progress lines (min_skip 2), which end with a new
	// line whatever happens next.
	var progress *qemuProgress
	if o.has("p") && !o.has("q") {
		progress = &qemuProgress{w: e.stdout, minSkip: 2}
		defer fmt.Fprintln(e.stdout)
	}
	cache, err := o.cacheOpt(true)
	if err != nil {
		return e.errorf(2, "%v", err)
	}
	var imgs [2]*image
	for i, f := range []string{o.get("f", ""), o.get("F", "")} {
		spec, err := o.imageSpec(o.args[i], imgopen.Spec{Format: f, Cache: cache.imgopen(), ReadOnly: true,
			Opts: qcow2.Options{ForceShare: o.forceShare()}})
		if err != nil {
			// qemu-img compare's open failures, a spec it cannot take
			// among them (its img_open fails: exit 2).
			return e.errorf(2, "%v", err)
		}
		img, err := openImage(spec)
		if err != nil {
			return e.errorf(2, "%v", err)
		}
		defer img.Close()
		if imgs[i], err = loadImage(img); err != nil {
			// Its map (block status) cannot be read: qemu-img's exit 3.
			return e.errorf(3, "Sector allocation test failed for %s: %v", o.args[i], err)
		}
	}
	var steps *compareProgress
	if progress != nil {
		progress.print(0, 100)
		steps = newCompareProgress(progress, imgs[0], imgs[1])
	}
	r, err := compareImages(imgs[0], imgs[1], o.has("s"))
	var re *compareReadError
	if errors.As(err, &re) {
		name := o.args[0]
		if re.which == 1 || re.which < 0 && imgs[1].size > imgs[0].size {
			name = o.args[1]
		}
		return e.errorf(4, re.Error(), name)
	}
	if err != nil {
		return e.errorf(2, "%v", err)
	}
	quiet := o.has("q")
	say := func(format string, a ...any) {
		if !quiet {
			fmt.Fprintf(e.stdout, format, a...)
		}
	}
	if r.SizeMismatch && o.has("s") {
		say("Strict mode: Image size mismatch!\n")
		return 1
	}
	// The part both images have, then (qemu-img warns once it matched)
	// the rest of the larger one, the progress lines between.
	common := min(imgs[0].size, imgs[1].size)
	commonOK := r.Identical || (!r.StatusMismatch && r.Offset >= common)
	if steps != nil {
		stop := common
		if !commonOK {
			stop = r.Offset
		}
		if err := steps.common(imgs[0], imgs[1], stop); err != nil {
			return e.errorf(3, "%v", err)
		}
	}
	if r.SizeMismatch && commonOK {
		say("Warning: Image size mismatch!\n")
		if steps != nil {
			big, stop := imgs[0], r.Offset
			if imgs[1].size > big.size {
				big = imgs[1]
			}
			if r.Identical {
				stop = big.size
			}
			if err := steps.tail(big, common, stop); err != nil {
				return e.errorf(3, "%v", err)
			}
		}
	}
	if r.StatusMismatch {
		say("Strict mode: Offset %d block status mismatch!\n", r.Offset)
		return 1
	}
	if !r.Identical {
		say("Content mismatch at offset %d!\n", r.Offset)
		return 1
	}
	say("Images are identical.\n")
	return 0
}
