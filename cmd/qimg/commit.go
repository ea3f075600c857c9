package main

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
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
	err = doCommit(o.args[0], o.get("f", ""), o.get("t", ""), o.has("d"), progress)
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

// doCommit writes what path allocates itself into its backing file
// (data as data, zero clusters as zeros), then, unless keep (-d), empties
// path as qemu-img 7.2 does, so that the chain reads the same. An image
// is emptied by creating it anew with the same options and backing file
// (the data is durable in the backing file by then); internal snapshots
// would be lost that way, so an image with snapshots is only committed
// with -d.
func doCommit(path, fmtName, cache string, keep bool, progress func(done, total int64)) error {
	top, err := openImage(imgopen.Spec{Path: path, Format: fmtName, Cache: cache, ReadOnly: true,
		Opts: qcow2.Options{NoBacking: true}})
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
	if h.NbSnapshots > 0 && !keep {
		top.Close()
		return errors.New("qimg cannot empty an image with internal snapshots: use -d")
	}
	bpath := pathCombine(path, h.BackingFile)
	base, err := openImage(imgopen.Spec{Path: bpath, Format: h.BackingFormat, Cache: cache})
	if err != nil {
		top.Close()
		return err
	}
	err = commitInto(im, base, progress)
	bfmt := base.Format()
	if cerr := base.Close(); err == nil {
		err = cerr
	}
	if cerr := top.Close(); err == nil {
		err = cerr
	}
	if err != nil || keep {
		return err
	}
	return makeEmpty(path, h, bfmt)
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

// makeEmpty recreates path as an empty overlay with h's options.
func makeEmpty(path string, h format.Header, backingFmt string) error {
	op, err := imgopen.Opener("writeback", "")
	if err != nil {
		return err
	}
	o := qcow2.CreateOptions{
		Size: int64(h.Size), ClusterSize: int(h.ClusterSize()), Compat: "1.1",
		RefcountBits: 1 << h.RefcountOrder, LazyRefcounts: h.CompatibleFeatures&format.CompatLazyRefcounts != 0,
		BackingFile: h.BackingFile, BackingFormat: h.BackingFormat, Opener: op,
	}
	if o.BackingFormat == "" {
		o.BackingFormat = backingFmt
	}
	if h.Version < 3 {
		o.Compat = "0.10"
	}
	if err := qcow2.Create(path, o); err != nil {
		return fmt.Errorf("Could not empty %s: %w", path, err)
	}
	return nil
}
