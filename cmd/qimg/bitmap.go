package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// bitmapOp is one operation of qemu-img bitmap, in command-line order.
type bitmapOp struct {
	name string // add, remove, clear, enable, disable, merge
	src  string // merge: the source bitmap
}

// bitmapOps lists the operations of args in their order (getopt keeps
// only each option's values).
func bitmapOps(args []string) []bitmapOp {
	var ops []bitmapOp
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		switch a {
		case "--add", "--remove", "--clear", "--enable", "--disable":
			ops = append(ops, bitmapOp{name: a[2:]})
		case "--merge":
			if i+1 < len(args) {
				ops = append(ops, bitmapOp{name: "merge", src: args[i+1]})
				i++
			}
		default:
			if v, ok := strings.CutPrefix(a, "--merge="); ok {
				ops = append(ops, bitmapOp{name: "merge", src: v})
			} else if a == "-b" || a == "-F" || a == "-f" || a == "-g" || a == "--object" {
				i++ // its value is no operation
			}
		}
	}
	return ops
}

// runBitmap is qemu-img bitmap: operations on a persistent dirty bitmap,
// applied in order (qcow2 Q22 maintains the bitmaps while the image is
// open; Close stores them).
func runBitmap(e *env, args []string) int {
	o, err := e.getopt(args, "b:F:f:g:", "add", "remove", "clear", "enable", "disable", "merge:", "object:", "image-opts")
	if err != nil {
		return e.usageErr(err)
	}
	gran := uint64(0) // the image's default (doBitmaps), as -g 0
	if o.has("g") {
		// To INT64_MAX, as qemu-img's cvtnum, while it reads the
		// options. qemu-img then hands it to a uint32 parameter, so
		// 2^32+512 makes a bitmap of 512-byte granularity; qimg refuses
		// it (doBitmaps), deliberately.
		g, err := cvtnum("granularity", o.get("g", ""))
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		gran = uint64(g)
	}
	ops := bitmapOps(args)
	switch {
	case len(ops) == 0:
		return e.errorf(1, "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
	case gran != 0 && !o.has("add"): // -g 0 is no granularity, as in qemu-img
		return e.errorf(1, "granularity only supported with --add")
	case o.has("b") && !o.has("merge"):
		return e.errorf(1, "Merge bitmap source file only supported with --merge")
	case o.has("F") && !o.has("b"):
		return e.errorf(1, "-F only supported with -b")
	case len(o.args) != 2:
		return e.errorf(1, "Expecting filename and bitmap name")
	}
	spec, err := o.imageSpec(o.args[0], imgopen.Spec{Format: o.get("f", ""), Opts: qcow2.Options{PreallocSize: noReserve}})
	if err != nil {
		return e.usageErr(err)
	}
	// As qemu-img bitmap (BDRV_O_NO_BACKING): bitmaps are the image's
	// own, so a missing backing file does not stop them.
	spec.Opts.NoBacking = true
	if err := refuseBackingOptions(spec); err != nil {
		return e.errorf(1, "%v", err)
	}
	img, err := openImage(spec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	img.GuardProbed(e.stderr) // a probed raw image opened writable: QEMU's warning
	name := o.args[1]
	err = doBitmaps(img, ops, name, gran, o.get("b", ""), o.get("F", ""))
	if cerr := img.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	return 0
}

// doBitmaps runs ops on bitmap name of img, stopping at the first
// failure, with qemu-img's messages.
func doBitmaps(img *imgopen.Opened, ops []bitmapOp, name string, gran uint64, srcFile, srcFmt string) error {
	im := img.Image
	// The merge source is opened before any operation runs, as
	// qemu-img's: one it cannot open changes nothing. Without its
	// backing files (BDRV_O_NO_BACKING): its backing file may be the
	// image itself, open for writing here.
	src := im
	if srcFile != "" && slices.ContainsFunc(ops, func(op bitmapOp) bool { return op.name == "merge" }) {
		spec := imgopen.Spec{Path: srcFile, Format: srcFmt, ReadOnly: true}
		spec.Opts.NoBacking = true
		s, err := openImage(spec)
		if err != nil {
			return err
		}
		defer s.Close()
		src = s.Image
	}
	for _, op := range ops {
		var err error
		switch {
		case im == nil && op.name == "add":
			// QEMU's message names the node ("to #block123"), a
			// number of its own: not reproduced.
			err = errors.New("Can't store persistent bitmaps: Operation not supported")
		case im == nil:
			err = fmt.Errorf("Dirty bitmap '%s' not found", name) // the others look it up first
		case im.Header().Version < 3 && op.name == "add":
			// QEMU's message names the node ("in '#block123'"),
			// not reproduced (above).
			err = fmt.Errorf("Can't make bitmap '%s' persistent: Cannot store dirty bitmaps in qcow2 v2 files", name)
		case im.Header().Version < 3:
			// A version 2 image has no bitmaps: QEMU looks the
			// bitmap up first.
			err = fmt.Errorf("Dirty bitmap '%s' not found", name)
		case op.name == "add":
			if gran == 0 {
				// QEMU's bdrv_get_default_bitmap_granularity.
				h := im.Header()
				gran = min(max(4096, uint64(h.ClusterSize())), 65536)
			}
			err = im.AddBitmap(name, gran, true)
		case op.name == "remove":
			err = im.RemoveBitmap(name)
		case op.name == "clear":
			err = im.ClearBitmap(name)
		case op.name == "enable", op.name == "disable":
			err = im.EnableBitmap(name, op.name == "enable")
		case op.name == "merge" && src == nil:
			err = fmt.Errorf("Dirty bitmap '%s' not found", op.src)
		case op.name == "merge" && hasBitmap(im, name) && !hasBitmap(src, op.src):
			// As QEMU: the target is looked up, then the source,
			// before either is found inconsistent.
			err = fmt.Errorf("Dirty bitmap '%s' not found", op.src)
		case op.name == "merge":
			err = im.MergeBitmap(name, src, op.src)
		}
		var oe *OpenError
		if errors.As(err, &oe) {
			return err // the merge source's open, named as qemu-img names it
		}
		if err != nil {
			return fmt.Errorf("Operation %s on bitmap %s failed: %s", op.name, name, bitmapErrText(err))
		}
	}
	return nil
}

// hasBitmap reports whether im has a persistent bitmap called name,
// consistent or not.
func hasBitmap(im *qcow2.Image, name string) bool {
	return slices.ContainsFunc(im.Bitmaps(), func(b qcow2.BitmapInfo) bool { return b.Name == name })
}

// inconsistentText is qemu-img's message, with its hint, for an
// operation refused because a bitmap is inconsistent.
func inconsistentText(err error) (string, bool) {
	var bi *qcow2.BitmapInconsistentError
	if !errors.As(err, &bi) {
		return "", false
	}
	return bi.Error() + "; Try block-dirty-bitmap-remove to delete this bitmap from disk", true
}

// bitmapErrText is err as qemu-img words it: without our package
// prefixes.
func bitmapErrText(err error) string {
	if msg, ok := inconsistentText(err); ok {
		return msg
	}
	switch {
	case errors.Is(err, qcow2.ErrNoBitmap):
		_, name, _ := strings.Cut(err.Error(), qcow2.ErrNoBitmap.Error()+": ")
		return fmt.Sprintf("Dirty bitmap %s not found", name)
	case errors.Is(err, qcow2.ErrUnsupported):
		_, msg, ok := strings.Cut(err.Error(), qcow2.ErrUnsupported.Error()+": ")
		if msg == "a bitmap name is empty" {
			return "Bitmap name cannot be empty" // QEMU's words
		}
		if ok {
			return msg
		}
	}
	return qemuErrnoText(err.Error(), []any{err}) // a failed request: its errno
}
