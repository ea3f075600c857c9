package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// resizeRequest is a parsed qimg resize command line.
type resizeRequest struct {
	path, format string
	spec         *imgopen.Spec // --image-opts / --object (nil: path and format)
	sign         byte          // '+', '-' or 0 (absolute)
	n            int64
	shrink       bool
	prealloc     string // --preallocation: off, metadata, falloc or full
	repairLog    func(string)
	warn         io.Writer // where a probed raw image's warning goes (GuardProbed)
}

// parseResizeSize reads [+|-]SIZE.
func parseResizeSize(s string) (sign byte, n int64, err error) {
	if strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		sign, s = s[0], s[1:]
	}
	v, err := qcow2.ParseSizeFull(s)
	switch {
	case errors.Is(err, qcow2.ErrSizeRange):
		return 0, 0, fmt.Errorf("Value '%s' is out of range for parameter 'size'", s)
	case err != nil:
		return 0, 0, errors.New("Parameter 'size' " + errSizeParam)
	case v > math.MaxInt64:
		return 0, 0, errNotPositive // QEMU's int64 of it is negative
	}
	return sign, int64(v), nil
}

// errNotPositive is qemu-img resize's refusal of a new size below 1 (or
// past 2^63-1, which its int64 arithmetic makes negative).
var errNotPositive = errors.New("New image size must be positive")

// target is the new size over the current one; one past 2^63-1 is
// negative, as in QEMU's int64 arithmetic.
func (r *resizeRequest) target(cur int64) int64 {
	switch r.sign {
	case '+':
		if r.n > math.MaxInt64-cur {
			return -1
		}
		return cur + r.n
	case '-':
		return cur - r.n
	}
	return r.n
}

func runResize(e *env, args []string) int {
	// As qemu-img, the size is the last argument, taken before the
	// options are parsed, so that "-1G" is not an option.
	if len(args) < 2 {
		return e.usageErr(errors.New("Not enough arguments"))
	}
	sizeArg := args[len(args)-1]
	o, err := e.getopt(args[:len(args)-1], "f:q", "shrink", "preallocation:", "object:", "image-opts") // no -U: qemu-img 7.2's resize has none
	if err != nil {
		return e.usageErr(err)
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting image file name and size"))
	}
	p := o.get("preallocation", "off")
	switch p {
	case "off", "metadata", "falloc", "full":
	default:
		return e.errorf(1, "Invalid preallocation mode '%s'", p)
	}
	r := &resizeRequest{path: o.args[0], format: o.get("f", ""), shrink: o.has("shrink"), prealloc: p, repairLog: o.repairLog,
		warn: e.stderr}
	if o.has("image-opts") || o.has("object") {
		s, err := o.imageSpec(r.path, imgopen.Spec{Format: r.format, Opts: qcow2.Options{PreallocSize: noReserve}})
		if err != nil {
			return e.usageErr(err)
		}
		r.spec, r.path, r.format = &s, s.Path, s.Format
	}
	if r.sign, r.n, err = parseResizeSize(sizeArg); err != nil {
		return e.errorf(1, "%v", err)
	}
	if err := doResize(r); err != nil {
		code := e.errorf(1, "%v", err)
		if errors.Is(err, errNeedShrink) {
			fmt.Fprintln(e.stderr, "qimg: resize: warning: Shrinking an image will delete all data beyond the shrunken image's end. "+
				"Before performing such an operation, make sure there is no important data there.")
		}
		return code
	}
	if !o.has("q") {
		fmt.Fprintln(e.stdout, "Image resized.")
	}
	return 0
}

// errNeedShrink is a shrink request without --shrink.
var errNeedShrink = errors.New("Use the --shrink option to perform a shrink operation.")

// doResize opens the image read-write and sets its size.
func doResize(r *resizeRequest) error {
	spec := imgopen.Spec{Path: r.path, Format: r.format, Opts: qcow2.Options{RepairLog: r.repairLog, Warn: openWarnVia(r.repairLog), PreallocSize: noReserve}}
	if r.spec != nil {
		spec = *r.spec
	}
	img, err := openImage(spec)
	if err != nil {
		return err
	}
	img.GuardProbed(r.warn) // a probed raw image opened writable: QEMU's warning
	cur, err := img.Dev.Size()
	if err != nil {
		img.Close()
		return err
	}
	if img.Image == nil {
		cur = roundUp(cur, 512) // as QEMU's length of a raw file, in sectors
	}
	size := r.target(cur)
	switch {
	case size <= 0:
		err = errors.New("New image size must be positive")
	case size <= cur && r.prealloc != "off":
		err = errors.New("Preallocation can only be used for growing images")
	case size < cur && !r.shrink:
		err = errNeedShrink
	case size > qemuMaxLength:
		err = errExceedsMax(size)
	case img.VHD != nil || img.VMDK != nil:
		// Their drivers cannot resize (QEMU's vpc and vmdk neither).
		err = errors.New("Image format driver does not support resize")
	case img.RawFixed:
		// QEMU's raw driver, before the file driver sees the mode.
		err = errors.New("Cannot resize fixed-size raw disks")
	case img.LUKS != nil && r.prealloc == "metadata":
		err = errors.New("Unsupported preallocation mode: metadata") // the file driver's
	case img.LUKS != nil:
		// QEMU's crypto driver: the file is the payload offset longer,
		// grown space the file's zeros (noise, LV6), preallocated as
		// the file driver does.
		l := img.LUKS
		if err = l.ResizeFile(size); err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				err = &capitalized{err: errno}
			}
			err = fmt.Errorf("Could not resize file: %w", err)
		} else {
			err = preallocOn(l.File(), l.PayloadOffset()+cur, l.PayloadOffset()+size, r.prealloc)
		}
	case img.Image == nil && r.prealloc == "metadata":
		err = errors.New("Unsupported preallocation mode: metadata")
	case img.Image != nil:
		err = resizeQcow2(img.Image, cur, size, r.prealloc)
	case img.RawFile != "":
		// Raw: resized while the open holds the image's lock, as in
		// QEMU, so that no other process writes the file in between
		// (the first block written over an empty file, the zeros of
		// a full preallocation).
		err = resizeRaw(r, img.RawFile, img.RawOffset, cur, size)
	default:
		// A raw node over another node (a qcow2 image, a throttle) or
		// another driver at the root: truncated through its nodes, as
		// QEMU does. Truncating the host file under a qcow2 node cut
		// its clusters off.
		err = resizeNode(img, size, r.prealloc)
	}
	if err == nil {
		// The new size (and a raw file's preallocation) durable before
		// resize says done, as qemu-img's close flushes: a raw file's
		// or a LUKS volume's Close does not, and a truncate by path
		// goes through the open file's inode, which this syncs.
		err = img.Dev.Flush()
	}
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	if err == nil && img.Image != nil && size < cur {
		err = trimFile(spec)
	}
	return err
}

// resizeNode sets the size of an image that is no host file of its own
// through its Truncate (a raw node over a qcow2 image grows that
// image's virtual size).
func resizeNode(img *imgopen.Opened, size int64, prealloc string) error {
	if im, off := underRaw(img.Dev); im != nil {
		// Over a qcow2 image: that image's resize, shrinking too.
		cur, err := im.Size()
		if err != nil {
			return err
		}
		return resizeQcow2(im, cur, off+size, prealloc)
	}
	if prealloc != "off" {
		return fmt.Errorf("Unsupported preallocation mode: %s", prealloc)
	}
	err := img.Dev.Truncate(size)
	switch {
	case errors.Is(err, qcow2.ErrUnsupported):
		return fmt.Errorf("qimg resize cannot resize this node that way: %w", err)
	case errors.Is(err, nbd.ErrResize):
		return err // QEMU's nbd driver's words
	case errors.Is(err, block.ErrNotSupported):
		return errors.New("Image format driver does not support resize")
	}
	return err
}

// resizeRaw sets the size of the raw image that starts at offset off of
// the file at path (r's image; cur and size are the image's, not the
// file's), which doResize holds open (and locked).
func resizeRaw(r *resizeRequest, path string, off, cur, size int64) error {
	// Raw: the file is the image. A block device keeps its size (QEMU's
	// host_device: an exact resize to another size is refused).
	if isBlockDevice(path) {
		if size != cur {
			return errors.New("Cannot resize device files")
		}
		return nil
	}
	if r.prealloc != "off" {
		return growRawPrealloc(path, off+size, r.prealloc)
	}
	if err := os.Truncate(path, off+size); err != nil {
		return fmt.Errorf("Could not resize file: %w", &capitalized{err: unwrapPathErr(err)})
	}
	if off+cur == 0 {
		// An empty file grown: QEMU allocates its first block, as
		// when it creates one (allocateFirstBlock).
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return unwrapPathErr(err)
		}
		err = writeFirstBlock(f, size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return nil
}

// writeFirstBlock writes zeros over the first block of a file that was
// empty and has been grown to size, as QEMU's allocate_first_block: 4
// KiB, or a sector when size is less (the file then grows to 512 bytes).
func writeFirstBlock(f *os.File, size int64) error {
	n := int64(4096)
	if size < n {
		n = 512
	}
	_, err := f.WriteAt(make([]byte, n), 0)
	return err
}

// growRawPrealloc grows the raw file at path to size with its new part
// allocated, as QEMU's file driver does: falloc reserves it
// (fallocate), full writes zeros over it. If that fails (no space), the
// file goes back to its size, as QEMU's does: a fallocate out of space
// keeps what it allocated, the file grown over it, and a raw image's
// size is its file's.
func growRawPrealloc(path string, size int64, mode string) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("Could not resize file: %w", &capitalized{err: unwrapPathErr(err)})
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	cur := st.Size()
	if cur >= size {
		return nil
	}
	defer func() {
		if err != nil {
			f.Truncate(cur)
		}
	}()
	if mode == "falloc" {
		if err := syscall.Fallocate(int(f.Fd()), 0, cur, size-cur); err != nil {
			return fmt.Errorf("Could not preallocate new data: %w", &capitalized{err: err})
		}
		if cur == 0 {
			// As QEMU after its posix_fallocate of an empty file
			// (handle_aiocb_truncate); a failure is ignored there.
			writeFirstBlock(f, size)
		}
		return nil
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("Could not resize file: %w", &capitalized{err: err})
	}
	zeros := make([]byte, 1<<20)
	for off := cur; off < size; {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("Could not write zeros for preallocation: %w", err)
		}
		off += n
	}
	return f.Sync()
}

// resizeQcow2 grows (Truncate) or shrinks (Shrink) a qcow2 image. As
// QEMU, a grown image whose backing file reaches past the old end reads
// zeros there, not the backing data: Truncate makes the new range zero
// clusters (v3; v2 cannot past the old end's cluster, and the resize
// fails with QEMU's message).
func resizeQcow2(im *qcow2.Image, cur, size int64, prealloc string) error {
	if size > qemuMaxLength {
		return errExceedsMax(size)
	}
	if size%512 != 0 {
		return errors.New("The new size must be a multiple of 512")
	}
	if h := im.Header(); h.Version < 3 && h.NbSnapshots > 0 {
		return errors.New("Can't resize a v2 image which has snapshots")
	}
	if size < cur {
		return resizeErr(im.Shrink(size))
	}
	if h := im.Header(); prealloc != "off" && (h.BackingFile != "" || h.CryptMethod != 0) {
		// QEMU preallocates there too (and shows an encrypted image's
		// new range as garbage with falloc and full).
		return fmt.Errorf("preallocation=%s is not supported by qimg resize of a qcow2 image with a backing file or encryption", prealloc)
	}
	return resizeErr(im.TruncatePrealloc(size, prealloc))
}

// errExceedsMax is QEMU's block layer's refusal of a truncate past
// BDRV_MAX_LENGTH (qemuMaxLength), before any driver sees it.
func errExceedsMax(size int64) error {
	return fmt.Errorf("offset(%d) exceeds maximum(%d)", size, int64(qemuMaxLength))
}

// resizeErr is err as qemu-img resize words it.
func resizeErr(err error) error {
	if msg, ok := inconsistentText(err); ok {
		return errors.New(msg)
	}
	if errors.Is(err, qcow2.ErrGrowNeedsZeroClusters) {
		return errors.New("Failed to zero out new clusters: Operation not supported")
	}
	if errors.Is(err, qcow2.ErrL1TooLarge) {
		return errors.New("Failed to grow the L1 table: File too large") // QEMU's EFBIG
	}
	return err
}

// trimFile cuts a closed qcow2 file after its last used cluster, as
// QEMU does after a shrink (the discarded clusters past the new end are
// free but still take space). It does so only when Check finds the
// image clean, so that nothing past the cut is referenced, and holds
// the image's write lock from before the check until after the cut, so
// that no other process can open the image and allocate past the end
// in between.
func trimFile(spec imgopen.Spec) error {
	// The host file: the image was opened by its name (a file: prefix
	// too) or by --image-opts' file.filename. A json: driver tree's host
	// file is not known here: the image stays shrunk, its file uncut.
	// An export is not cut: QEMU's nbd driver takes a shrink of its
	// node as done (an inexact truncate), and so the shrink succeeds.
	if imgopen.IsSpec(spec.Path) || protocol.IsNBD(spec.Path) {
		return nil
	}
	path, err := protocol.Path(spec.Path, false)
	if err != nil {
		return nil
	}
	f, err := uring.Open(path, uring.Options{Backend: uring.Threads})
	if err != nil {
		return unwrapPathErr(err)
	}
	defer f.Close()
	perm, shared := qcow2.LockPerms(qcow2.FormatQcow2, false, false, false) // write and resize, shared with nobody
	if err := qcow2.LockAs(f, path, perm, shared); err != nil {
		return err
	}
	// As the resize opened it (its data-file.filename, its secrets),
	// the key not needed: Check reads only metadata.
	o := spec.Opts
	o.NoBacking, o.NoLock, o.NoKey = true, true, true // the lock is f's
	img, err := openImage(imgopen.Spec{Path: path, Format: "qcow2", ReadOnly: true, Opts: o,
		Secrets: spec.Secrets, DataFile: spec.DataFile})
	if err != nil {
		return err
	}
	r, err := img.Image.Check(qcow2.CheckOptions{})
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	if err != nil || !r.Clean() || r.ImageEndOffset <= 0 {
		return err
	}
	size, err := f.Size()
	if err != nil || size <= r.ImageEndOffset {
		return err
	}
	if err := f.Truncate(r.ImageEndOffset); err != nil {
		return err
	}
	return f.Flush() // the cut durable before resize says done
}
