package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

func runCommit(e *env, args []string) int {
	o, err := e.getopt(args, "f:t:b:r:dpq", "object:", "image-opts") // no -U: qemu-img 7.2 commit has none
	if err != nil {
		return e.usageErr(err)
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting one image file name"))
	}
	var rate int64
	if o.has("r") {
		if rate, err = parseRate(o.get("r", "")); err != nil {
			return e.errorf(1, "%v", err)
		}
	}
	var progress *commitProgress
	if o.has("p") && !o.has("q") {
		progress = newCommitProgress(e.stdout)
	}
	// -t: direct (none, directsync) reaches the base too, as QEMU's
	// backing nodes inherit it; writethrough does not flush the commit's
	// writes (QEMU's commit job writes through a block backend of its
	// own, which has a write cache).
	cache, err := o.cacheOpt(false)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	spec, err := o.imageSpec(o.args[0], imgopen.Spec{Format: o.get("f", ""), Cache: cache.imgopen()})
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	spec.WrapFile = cache.wrapFile() // unsafe: the base's and the top's
	if spec.Opts.NoBacking || imgopen.SpecNoBacking(spec.Path) {
		// backing=null: the image opens without a backing file, as
		// QEMU's commit then sees it (the header still names one, which
		// the commit below opens itself: it overwrote that file).
		if o.has("b") {
			return e.errorf(1, "Did not find '%s' in the backing chain of '%s'", o.get("b", ""), o.args[0])
		}
		return e.errorf(1, "%v", errNoBacking)
	}
	if b := o.get("b", ""); o.has("b") {
		// -b BASE: into BASE, which may lie deeper in the chain; it
		// implies -d, as in qemu-img.
		err = commitToBase(e.stderr, spec, b, rate, progress)
	} else {
		err = doCommit(e.stderr, spec, o.has("d"), rate, progress)
	}
	if err == nil {
		progress.done()
	}
	progress.end()
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	if !o.has("q") {
		fmt.Fprintln(e.stdout, "Image committed.")
	}
	return 0
}

// guardProbedBase puts a base whose format was probed as raw (its
// overlay names no backing format) behind QEMU's raw restriction: the
// commit fails with EPERM rather than write a first sector that would
// probe as another format (a committed qcow2 header would make the next
// open of the chain read any host file its backing name points at).
// QEMU prints no warning here: it opens the base read-only first.
func guardProbedBase(base *imgopen.Opened) { base.GuardProbed(nil) }

// jobFailed is an error of the copy as qemu-img reports its commit
// job's: "Block job failed: " and the errno's text (nil stays nil).
func jobFailed(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("Block job failed: %s", strerrorOf(err))
}

var errNoBacking = errors.New("Image does not have a backing file")

// vmdkChild refuses a VMDK image with a parent: qemu-img commits into
// its parent, qring does not write one (it said the image had no
// backing file).
func vmdkChild(top *imgopen.Opened) error {
	if top.Image == nil && top.VMDK != nil && top.VMDK.ParentHint() != "" {
		return errors.New("Operation not supported: qring does not commit a VMDK image into its parent")
	}
	return nil
}

// doCommit writes what the image of spec (a file, or --image-opts: a
// LUKS overlay with its key) allocates itself into its backing file
// (data as data, zero clusters as zeros), then, unless keep (-d), empties
// path as qemu-img 7.2 does, so that the chain reads the same: once the
// data is durable in the backing file, every cluster of the image
// becomes unallocated in place (Image.MakeEmpty); its header, features
// and internal snapshots stay.
func doCommit(warn io.Writer, spec imgopen.Spec, keep bool, rate int64, progress *commitProgress) error {
	spec.Opts.NoBacking = true
	ro := spec
	ro.ReadOnly = true
	path, cache := spec.Path, spec.Cache
	top, err := openCommitTop(warn, spec, ro)
	if err != nil {
		return err
	}
	progress.start()
	im := top.Image
	if err := vmdkChild(top); err != nil {
		top.Close()
		return err
	}
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
	if !keep {
		// Emptying it afterwards (MakeEmpty) would meet the damage and
		// fail after the base, which other overlays may share, had
		// changed (qemu-img commits such an image, then marks it
		// corrupt or frees clusters still in use).
		if err := refuseCorrupt(im, path+": not committed, the backing file is unchanged"); err != nil {
			top.Close()
			return err
		}
	}
	h := im.Header()
	bpath := pathCombine(layerPath(path, im), h.BackingFile)
	// A dirty base is repaired without a word: qemu-img reopens the
	// base read-write, which repairs nothing and so prints nothing.
	// Secrets: a json: base's key-secret; Opts: the keys --image-opts
	// or a json: name give the backing file (backing.*).
	base, err := openImage(imgopen.Spec{Path: bpath, Format: h.BackingFormat, Cache: cache, WrapFile: spec.WrapFile,
		Secrets: spec.Secrets, Opts: backingOpts(im.BackingOptions(), bpath, h.BackingFormat)})
	if err != nil {
		top.Close()
		// As qemu-img, which opens the chain with the image: the
		// image's open failed on its backing file.
		var oe *OpenError
		if errors.As(err, &oe) {
			name := path
			if spec.Name != "" {
				name = spec.Name // the --image-opts argument
			}
			err = &OpenError{Path: name, Err: fmt.Errorf("Could not open backing file: %w", oe.Err)}
		}
		return err
	}
	guardProbedBase(base)
	base.Dev = withRateLimit(base.Dev, rate) // -r
	size, err := im.Size()
	if err == nil {
		err = progress.scan([]*qcow2.Image{im}, size, nil)
	}
	if err == nil {
		err = jobFailed(growBase(base, size)) // "Operation not supported" for a VMDK or VHD base
	}
	if err == nil {
		err = jobFailed(commitInto(im, base, -1, progress))
	}
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
// im's size first if it is shorter (as QEMU's commit job); with limit >=
// 0, only what lies below limit (the top's size for commit -b). progress,
// if set, is told the position reached after each chunk.
func commitInto(im *qcow2.Image, base *imgopen.Opened, limit int64, progress *commitProgress) error {
	size, err := im.Size()
	if err != nil {
		return err
	}
	if limit >= 0 {
		size = min(size, limit)
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
				if err := base.Dev.Writev(o, [][]byte{b}); err != nil {
					return err
				}
				progress.copied(o, o+int64(len(b)))
				return nil
			})
		}
		if err != nil {
			return err
		}
		if st.Allocated && st.Zero {
			progress.copied(off, end)
		}
		off = end
	}
	return base.Dev.Flush()
}

// openCommitTop opens the top image of a commit through ro (spec read-
// only). qemu-img commit opens the top read-write whatever its options
// (-d, -b), before it copies anything: so does a writable open of spec
// here, which a top marked corrupt or too damaged to write fails (the
// commit copied into the base first, and then failed to empty the top:
// the base, which other overlays may share, had changed), and which
// repairs a top left dirty (lazy refcounts), with its lines on stderr
// (spec's RepairLog). A top probed as raw gets QEMU's warning, on warn.
func openCommitTop(warn io.Writer, spec, ro imgopen.Spec) (*imgopen.Opened, error) {
	top, err := openImage(ro)
	if err != nil {
		return nil, err
	}
	top.GuardProbed(warn)
	if top.Image == nil {
		return top, nil // no qcow2 image: refused by the caller, as by qemu-img
	}
	top.Close()
	// The open's warnings (stale bitmaps) were printed by the open
	// above: qemu-img opens the image once.
	spec.Opts.Warn = nil
	rw, err := openImage(spec) // refuses an image marked corrupt, as QEMU
	if err != nil {
		return nil, err
	}
	if err := rw.Close(); err != nil {
		return nil, err
	}
	return openImage(ro)
}

// makeEmpty opens the committed image for writing and makes all of it
// unallocated (QEMU's bdrv_make_empty after a commit). Where QEMU makes
// such an image completely empty (make_completely_empty: version 3, no
// internal snapshot, no dirty bitmap, no LUKS encryption, no external
// data file), it also cuts the file to its few metadata clusters: so
// is the file cut after its last used cluster here (trimFile), or a
// commit left the file as long as the data it held (sparse, but ls,
// quotas and copies without hole support saw its old size), its leaked
// clusters freed first.
func makeEmpty(spec imgopen.Spec) error {
	top, err := openImage(spec)
	if err != nil {
		return err
	}
	im := top.Image
	err = im.MakeEmpty()
	whole := im.Header().Version >= 3 && len(im.Snapshots()) == 0 && len(im.Bitmaps()) == 0 &&
		!im.Encrypted() && im.DataFileName() == ""
	if err == nil && whole {
		// QEMU's make_completely_empty writes new refcounts, which
		// count only the metadata left: clusters the image leaked
		// before are free after it (and the file is cut before
		// them, below).
		_, err = im.Check(qcow2.CheckOptions{Repair: qcow2.RepairLeaks})
	}
	if cerr := top.Close(); err == nil {
		err = cerr
	}
	if err == nil && whole {
		err = trimFile(spec)
	}
	if err != nil {
		// QEMU's bdrv_make_empty: the step and the errno
		// ("Failed to empty top.qcow2: No space left on device"),
		// not the request or the table that failed.
		return fmt.Errorf("Failed to empty %s: %s", spec.Path, strerror(err))
	}
	return nil
}

// commitToBase is qemu-img commit -b BASE: what every image of the chain
// above BASE allocates (the image of spec and the images between it and
// BASE) goes into BASE, and those images stay as they are (-b implies
// -d). BASE names an image of the chain as its overlay records it, or by
// any path to the same file (a relative one also from the overlay's
// directory, as QEMU resolves it). The layers are committed from the one just
// above BASE up to the top, so that what an upper layer holds wins, as
// in the chain.
func commitToBase(warn io.Writer, spec imgopen.Spec, base string, rate int64, progress *commitProgress) error {
	baseFi, statErr := os.Stat(base)
	matches := func(recorded, from, path string) bool {
		if recorded == base || path == base {
			return true
		}
		fi, err := os.Stat(path)
		if err != nil {
			return false
		}
		if statErr == nil && os.SameFile(fi, baseFi) {
			return true
		}
		// QEMU resolves a relative BASE against the directory of the
		// overlay (bdrv_find_backing_image).
		rel, err := os.Stat(pathCombine(from, base))
		return err == nil && os.SameFile(fi, rel)
	}
	ro := spec
	ro.ReadOnly, ro.Opts.NoBacking = true, true
	var layers []*imgopen.Opened
	defer func() {
		for _, l := range layers {
			l.Close()
		}
	}()
	top, err := openCommitTop(warn, spec, ro)
	if err != nil {
		return err
	}
	progress.start()
	layers = append(layers, top)
	if err := vmdkChild(top); err != nil {
		return err
	}
	if top.Image == nil {
		return fmt.Errorf("Did not find '%s' in the backing chain of '%s'", base, spec.Path)
	}
	path := spec.Path
	var seen []os.FileInfo // the layers' files, to refuse a chain that loops
	if fi, err := os.Stat(path); err == nil {
		seen = append(seen, fi)
	}
	var baseSpec imgopen.Spec
	bo := top.Image.BackingOptions() // the next layer's (backing.*)
	for cur := top; ; bo = below(bo) {
		if err := cur.Image.Damage(); err != nil {
			return err
		}
		h := cur.Image.Header()
		if h.BackingFile == "" {
			return fmt.Errorf("Did not find '%s' in the backing chain of '%s'", base, spec.Path)
		}
		from := layerPath(path, cur.Image)
		bpath := pathCombine(from, h.BackingFile)
		if matches(h.BackingFile, from, bpath) {
			baseSpec = imgopen.Spec{Path: bpath, Format: h.BackingFormat, Cache: spec.Cache, Secrets: spec.Secrets,
				WrapFile: spec.WrapFile, Opts: backingOpts(bo, bpath, h.BackingFormat)}
			break
		}
		if fi, err := os.Stat(bpath); err == nil {
			for _, s := range seen {
				if os.SameFile(fi, s) {
					return fmt.Errorf("%w: %q", qcow2.ErrBackingLoop, h.BackingFile)
				}
			}
			seen = append(seen, fi)
		}
		nextOpts := backingOpts(bo, bpath, h.BackingFormat)
		nextOpts.NoBacking, nextOpts.BackingOptions = true, nil
		next, err := openImage(imgopen.Spec{Path: bpath, Format: h.BackingFormat, ReadOnly: true,
			Secrets: spec.Secrets, Opts: nextOpts})
		if err != nil {
			return err
		}
		layers = append(layers, next)
		if next.Image == nil {
			return fmt.Errorf("Did not find '%s' in the backing chain of '%s'", base, spec.Path)
		}
		cur, path = next, bpath
	}
	b, err := openImage(baseSpec)
	if err != nil {
		return err
	}
	guardProbedBase(b)
	b.Dev = withRateLimit(b.Dev, rate) // -r
	// QEMU's commit job copies the top's view: nothing past the top's
	// end, which is as large as BASE grows.
	topSize, err := top.Image.Size()
	if err == nil {
		err = scanAbove(progress, layers, topSize)
	}
	if err == nil {
		// BASE grows to the top's size before anything is copied, as
		// in QEMU's commit job: a BASE that cannot grow fails the
		// commit unchanged (the layers below a longer one were
		// copied in first, and then it failed).
		err = jobFailed(growBase(b, topSize))
	}
	for i := len(layers) - 1; i >= 0 && err == nil; i-- {
		if i+1 < len(layers) {
			// Past the end of a shorter layer below, the chain reads
			// zeros that layer supplies (QEMU counts them allocated
			// above BASE and writes them): zeros first, then what
			// this layer and the ones above hold.
			err = jobFailed(zerosPastShorterLayer(layers[i+1].Image, layers[i].Image, b, topSize, progress))
		}
		if err == nil {
			err = jobFailed(commitInto(layers[i].Image, b, topSize, progress))
		}
	}
	if err == nil {
		err = b.Dev.Flush()
	}
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	return err
}

// scanAbove is progress.scan over the layers above BASE (top first),
// what they allocate and what lies past the end of a shorter layer below
// one of them, below limit.
func scanAbove(progress *commitProgress, layers []*imgopen.Opened, limit int64) error {
	if progress == nil {
		return nil
	}
	var ims []*qcow2.Image
	var extra []span
	for i, l := range layers {
		ims = append(ims, l.Image)
		if i+1 < len(layers) {
			lo, err := layers[i+1].Image.Size()
			if err != nil {
				return err
			}
			hi, err := l.Image.Size()
			if err != nil {
				return err
			}
			if hi = min(hi, limit); lo < hi {
				extra = append(extra, span{lo, hi})
			}
		}
	}
	return progress.scan(ims, limit, extra)
}

// layerPath is the name a layer's relative backing name is relative to:
// the name it was opened by, or for a json: name its image's file, as
// QEMU resolves it.
func layerPath(name string, im *qcow2.Image) string {
	if strings.HasPrefix(name, "json:") && im.Path() != "" {
		return im.Path()
	}
	return name
}

// below are the backing.* options of the backing file of the one bo
// opens (nil: none).
func below(bo *qcow2.BackingOptions) *qcow2.BackingOptions {
	if bo == nil {
		return nil
	}
	return bo.Backing
}

// growBase grows base to size if it is shorter; a base that cannot
// grow (a VMDK or VHD image, a qcow2 image of another limit) fails with
// its errno.
func growBase(base *imgopen.Opened, size int64) error {
	bsize, err := base.Dev.Size()
	if err != nil || bsize >= size {
		return err
	}
	if err := base.Dev.Truncate(size); err != nil {
		if errors.Is(err, block.ErrNoResize) || errors.Is(err, block.ErrNotSupported) {
			return fmt.Errorf("%w: %w", syscall.ENOTSUP, err)
		}
		return err
	}
	return nil
}

// zerosPastShorterLayer writes zeros into base over the part of upper
// that lies past the end of lower, the layer below it, and below limit,
// growing base to that end first if it is shorter.
func zerosPastShorterLayer(lower, upper *qcow2.Image, base *imgopen.Opened, limit int64, progress *commitProgress) error {
	lo, err := lower.Size()
	if err != nil {
		return err
	}
	hi, err := upper.Size()
	if hi = min(hi, limit); err != nil || lo >= hi {
		return err
	}
	bsize, err := base.Dev.Size()
	if err != nil {
		return err
	}
	if bsize < hi {
		if err := base.Dev.Truncate(hi); err != nil {
			return fmt.Errorf("Could not resize the backing file: %w", err)
		}
	}
	if err := base.Dev.WriteZeroes(lo, hi-lo, block.MayUnmap); err != nil {
		return err
	}
	progress.copied(lo, hi)
	return nil
}

// backingOpts are the options that open the backing file at path
// (format: its header's backing format, probed when empty) as the
// image's chain opens it: the keys and options its backing.* options
// give (bo; nil: none).
func backingOpts(bo *qcow2.BackingOptions, path, format string) qcow2.Options {
	var o qcow2.Options
	if bo == nil {
		return o
	}
	if format == "" {
		format, _ = qcow2.Probe(path)
	}
	bo.Apply(&o, format)
	return o
}
