package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"

	"github.com/qring/qring/internal/cnum"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
)

// amendRequest is what qimg amend changes; nil fields stay as they are.
type amendRequest struct {
	path, format, cache string
	spec                imgopen.Spec // the image: path, format and cache, or --image-opts
	version             *uint32
	lazy                *bool
	refbits             *uint32 // refcount_bits
	size                int64   // 0: unchanged
	// backing_file and backing_fmt, when given: they must name what the
	// image has (qemu-img 7.2 amends no backing file).
	backingFile, backingFmt *string
	dataFile                *string // data_file: the external data file's new name
	dataFileRaw             *bool   // data_file_raw: may only be cleared
	// crypt are the encrypt.* options (keys without the prefix), applied
	// to the image's LUKS header (amendEncryption) with secrets.
	crypt   [][2]string
	secrets *secret.Store
	force   bool      // --force
	warn    io.Writer // where a probed raw image's warning goes (GuardProbed)
	// optErr is parseAmendOptions' error, reported once the image is
	// open, as qemu-img parses the options after its open.
	optErr error
	// started, if set, is called when the amendment starts: after the
	// open and the option parser, before the driver looks at the
	// values (qemu-img -p prints its 0 % there).
	started func()
}

func runAmend(e *env, args []string) int {
	o, err := e.getopt(args, "f:o:t:qp", "object:", "image-opts", "force")
	if err != nil {
		return e.usageErr(err)
	}
	if err := o.optionLists(); err != nil {
		return e.errorf(1, "%v", err)
	}
	if !o.has("o") {
		return e.usageErr(errors.New("Must specify options (-o)"))
	}
	// -p: qemu-img's progress, which ends with a new line whatever
	// happens next; qimg prints the start and the end of the amendment.
	var progress func(done, total int64)
	if o.has("p") && !o.has("q") {
		progress = progressPrinter(e.stdout)
		defer fmt.Fprintln(e.stdout)
	}
	help := slices.ContainsFunc(o.vals["o"], isHelpOption)
	if f := o.get("f", ""); f != "" && help {
		// qemu-img answers for the format given, with or without a file.
		return e.amendOptionsHelp(f)
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting one image file name"))
	}
	// -t: only direct matters (QEMU amends below its block backend,
	// where writethrough does not flush).
	cache, err := o.cacheOpt(false)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	r := &amendRequest{path: o.args[0], format: o.get("f", ""), cache: cache.imgopen(), warn: e.stderr}
	started := false
	if progress != nil {
		r.started = func() { started = true; progress(0, 1) }
	}
	if r.spec, err = o.imageSpec(r.path, imgopen.Spec{Format: r.format, Cache: r.cache}); err != nil {
		return e.errorf(1, "%v", err)
	}
	r.spec.WrapFile = cache.wrapFile()
	r.path, r.format = r.spec.Path, r.spec.Format
	if help {
		// qemu-img opens the image to learn its format, then answers.
		spec := r.spec
		spec.ReadOnly = true
		img, err := openImage(spec)
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		if img.ProbedRaw != "" {
			// qemu-img opens it writable: QEMU's warning for a
			// probed raw image.
			fmt.Fprintf(e.stderr, imgopen.ProbedWarning, img.ProbedRaw)
		}
		f := img.Format()
		img.Close()
		return e.amendOptionsHelp(f)
	}
	f := r.format
	if f == "" {
		// qemu-img opens the image, then finds its driver cannot
		// amend, before it reads the options.
		if p, err := qcow2.Probe(r.path); err == nil {
			f = p
		}
	}
	if f == "luks" || imgopen.SpecHasDriver(r.path, "luks") {
		// Opened with its key first, as qemu-img opens any image.
		if ok, err := amendLUKS(o, r); ok {
			if started {
				progress(1, 1)
			}
			if err != nil {
				return e.errorf(1, "%v", err)
			}
			return 0
		}
	}
	if f == "raw" {
		// qemu-img opens the image writable first: the open's error,
		// or QEMU's warning for a probed raw image.
		img, err := openImage(r.spec)
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		img.GuardProbed(e.stderr)
		img.Close()
	}
	if f != "" && f != "qcow2" {
		return e.errorf(1, "Format driver '%s' does not support option amendment", f)
	}
	r.optErr = parseAmendOptions(r, o.vals["o"])
	if r.secrets, err = o.secrets(); err != nil {
		return e.errorf(1, "%v", err)
	}
	r.force = o.has("force")
	err = doAmend(r)
	if started {
		progress(1, 1)
	}
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	return 0
}

// amendOptionsHelp is qemu-img amend -o help, in its layout and order
// (backing_file and backing_fmt: only as the image has them, as
// qemu-img 7.2).
func (e *env) amendOptionsHelp(f string) int {
	if f == "luks" {
		fmt.Fprintf(e.stdout, "Amend options for '%s':\n", f)
		for _, o := range luksAmendOptions {
			fmt.Fprintf(e.stdout, "  %-22s - %s\n", o.name+"=<"+o.typ+">", o.help)
		}
		return 0
	}
	if f != "qcow2" {
		return e.errorf(1, "Format driver '%s' does not support option amendment", f)
	}
	fmt.Fprintf(e.stdout, "Amend options for '%s':\n", f)
	opts := []createOption{
		{"backing_file", "str", "File name of a base image"},
		{"backing_fmt", "str", "Image format of the base image"},
		{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
		{"data_file", "str", "File name of an external data file"},
		{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
	}
	for _, o := range luksAmendOptions {
		opts = append(opts, createOption{"encrypt." + o.name, o.typ, o.help})
	}
	for _, o := range append(opts, []createOption{
		{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
		{"refcount_bits", "num", "Width of a reference count entry in bits"},
		{"size", "size", "Virtual disk size"},
	}...) {
		fmt.Fprintf(e.stdout, "  %-22s - %s\n", o.name+"=<"+o.typ+">", o.help)
	}
	return 0
}

// parseAmendOptions reads the -o options qimg amend supports: compat,
// data_file, data_file_raw, lazy_refcounts, refcount_bits and size.
// backing_file and backing_fmt must name what the image has (doAmend),
// as qemu-img 7.2 changes no backing file; the other options qemu-img
// amends (encrypt.*) are refused by name.
func parseAmendOptions(r *amendRequest, optStrs []string) error {
	// An option given twice takes its last value, as qemu-img's (QEMU's
	// options keep every value and the driver reads the last): its
	// syntax is checked each time, its meaning (a compat level, a
	// refcount width) once, on that value, after them all.
	var compat, refbits *string
	for _, s := range optStrs {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return err
		}
		for _, p := range kv {
			switch p[0] {
			case "compat":
				v := p[1]
				compat = &v
			case "lazy_refcounts":
				if r.lazy, err = amendBool(p[0], p[1]); err != nil {
					return err
				}
			case "size":
				n, err := qcow2.ParseSizeFull(p[1])
				if errors.Is(err, qcow2.ErrSizeRange) {
					return fmt.Errorf("Value '%s' is out of range for parameter 'size'", p[1])
				}
				if err != nil {
					return fmt.Errorf("Parameter 'size' %s", errSizeParam)
				}
				// 0: no change, as qemu-img amend; from 2^63 on
				// negative, as in QEMU's int64 (refused at the resize).
				r.size = int64(n)
			case "backing_file":
				v := p[1]
				r.backingFile = &v
			case "backing_fmt":
				v := p[1]
				r.backingFmt = &v
			case "refcount_bits":
				if _, err := qcow2.ParseNumber(p[1]); err != nil {
					return fmt.Errorf("Parameter 'refcount_bits' expects a number")
				}
				v := p[1]
				refbits = &v
			case "data_file":
				v := p[1]
				r.dataFile = &v
			case "data_file_raw":
				if r.dataFileRaw, err = amendBool(p[0], p[1]); err != nil {
					return err
				}
			case "encrypt.iter-time", "encrypt.keyslot", "encrypt.new-secret", "encrypt.old-secret", "encrypt.state":
				r.crypt = append(r.crypt, [2]string{strings.TrimPrefix(p[0], "encrypt."), p[1]})
			case "cluster_size", "preallocation", "extended_l2", "compression_type", "encryption", "encrypt.format",
				"encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg":
				return fmt.Errorf("Invalid parameter '%s'\nThis option is only supported for image creation", p[0])
			default:
				return fmt.Errorf("Invalid parameter '%s'", p[0])
			}
		}
	}
	if compat != nil {
		var v uint32
		switch *compat {
		case "0.10", "v2":
			v = 2
		case "1.1", "v3":
			v = 3
		default:
			return amendValueError{fmt.Errorf("Unknown compatibility level %s", *compat)}
		}
		r.version = &v
	}
	if refbits != nil {
		n, _ := qcow2.ParseNumber(*refbits) // parsed above
		if n == 0 || n > 64 || n&(n-1) != 0 {
			return amendValueError{errors.New("Refcount width must be a power of two and may not exceed 64 bits")}
		}
		v := uint32(n)
		r.refbits = &v
	}
	return nil
}

// amendBool reads a bool amend option as qemu-img amend takes it
// (QEMU's parse_option_bool: on, yes, true, y and their opposites).
func amendBool(name, v string) (*bool, error) {
	var b bool
	switch v {
	case "on", "yes", "true", "y":
		b = true
	case "off", "no", "false", "n":
	default:
		return nil, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", name)
	}
	return &b, nil
}

// doAmend applies r in QEMU's order: upgrade, lazy refcounts, size
// (growing or shrinking, as qimg resize --shrink), then downgrade. A
// downgrade expands zero clusters first, after the resize (as QEMU's
// qcow2_expand_zero_clusters) and closes the image so that it is clean
// before its header loses the feature bits.
func doAmend(r *amendRequest) error {
	img, err := openImage(r.spec)
	if err != nil {
		return err
	}
	img.GuardProbed(r.warn) // a probed raw image opened writable: QEMU's warning
	im := img.Image
	if im == nil {
		f := img.Format() // "file" for a file node at the root
		img.Close()
		return fmt.Errorf("Format driver '%s' does not support option amendment", f)
	}
	if err := amendOptionsParsed(r); err != nil {
		img.Close()
		return err
	}
	if r.started != nil {
		r.started()
	}
	if r.optErr != nil {
		img.Close()
		return r.optErr // the driver's refusal of a value
	}
	h := im.Header()
	newV := h.Version
	if r.version != nil {
		newV = *r.version
	}
	err = checkAmend(h, newV, r.lazy, r.refbits)
	if err == nil {
		// QEMU refuses these while it reads the options, before it
		// changes anything.
		err = checkAmendDataFile(&h, r)
	}
	if err == nil && r.size > 0 && r.size <= qemuMaxLength && r.size%512 != 0 {
		// Sizes QEMU's block layer refuses first are refused at the
		// resize (resizeQcow2, below).
		err = errors.New("The new size must be a multiple of 512")
	}
	if err == nil && r.refbits != nil && *r.refbits != 1<<h.RefcountOrder {
		// The width change copies the stored refcounts and frees the
		// old structures: a refcount block guest data also points at
		// was freed under it (qemu-img amends such an image).
		err = refuseCorrupt(im, "refcount_bits not changed")
	}
	if err == nil && r.crypt != nil {
		err = amendEncryption(im, r)
	}
	if err == nil && newV > h.Version {
		err = im.SetVersion(newV)
	}
	if err == nil && r.refbits != nil {
		if err = im.SetRefcountBits(*r.refbits); errors.Is(err, qcow2.ErrUnsupported) {
			err = errors.New(strings.TrimPrefix(err.Error(), qcow2.ErrUnsupported.Error()+": "))
		}
	}
	if err == nil && (r.backingFile != nil || r.backingFmt != nil) {
		// As QEMU, after the upgrade and the refcount width: both must
		// be what the image has (one left out is none), else nothing
		// more changes.
		if !sameName(r.backingFile, h.BackingFile) || !sameName(r.backingFmt, h.BackingFormat) {
			err = errors.New("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
		}
	}
	if err == nil && r.lazy != nil {
		err = im.SetLazyRefcounts(*r.lazy)
	}
	if err == nil && r.size < 0 {
		err = errors.New("Image size cannot be negative")
	}
	if err == nil && r.size != 0 {
		err = resizeQcow2(im, int64(h.Size), r.size, "off")
	}
	if err == nil && r.dataFile != nil {
		err = im.SetDataFile(*r.dataFile)
	}
	if err == nil && r.dataFileRaw != nil {
		err = im.SetDataFileRaw(*r.dataFileRaw)
	}
	if err == nil && newV < h.Version {
		// After the resize, whose growth over a longer backing file
		// writes zero clusters too; QEMU's refusals first, so that a
		// refused downgrade changes nothing.
		if err = im.CheckDowngrade(); errors.Is(err, qcow2.ErrUnsupported) {
			err = errors.New(strings.TrimPrefix(err.Error(), qcow2.ErrUnsupported.Error()+": "))
		}
		if err == nil {
			err = im.ExpandZeroClusters()
			if err == nil {
				err = im.ExpandSnapshotZeroClusters()
			}
			var en syscall.Errno
			if errors.As(err, &en) {
				// As QEMU's qcow2_downgrade: the step and the
				// errno, not the request that failed.
				err = fmt.Errorf("Failed to turn zero into data clusters: %s", strerror(err))
			}
		}
	}
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	if err != nil || newV >= h.Version {
		return err
	}
	img, err = openImage(r.spec)
	if err != nil {
		return err
	}
	// The refusal the engine finds only by looking at the clusters
	// (compressed ones in a zstd image) reads as qemu-img's.
	if err = img.Image.SetVersion(newV); errors.Is(err, qcow2.ErrUnsupported) {
		err = errors.New(strings.TrimPrefix(err.Error(), qcow2.ErrUnsupported.Error()+": "))
	}
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	return err
}

// amendValueError is an option value qemu-img's option parser takes and
// its driver refuses, after qemu-img -p has printed its 0 %.
type amendValueError struct{ error }

func (e amendValueError) Unwrap() error { return e.error }

// amendOptionsParsed is the error of qemu-img's option parser, which
// comes before the amendment starts: an unknown option, or a value not
// of its type (encrypt.keyslot and encrypt.iter-time are numbers).
func amendOptionsParsed(r *amendRequest) error {
	if r.optErr != nil {
		if _, ok := r.optErr.(amendValueError); !ok {
			return r.optErr
		}
	}
	for _, p := range r.crypt {
		if _, ok := cnum.Uint64(p[1]); !ok && (p[0] == "keyslot" || p[0] == "iter-time") {
			return fmt.Errorf("Parameter 'encrypt.%s' expects a number", p[0])
		}
	}
	return nil
}

// checkAmend refuses, before anything is written, what QEMU refuses.
// As QEMU's qcow2_amend_options: the refcount width first, then lazy
// refcounts, refused with compat=0.10 only where they would be turned
// on (an image that has them loses them in the downgrade).
func checkAmend(h format.Header, newV uint32, lazy *bool, refbits *uint32) error {
	bits := uint32(1) << h.RefcountOrder
	if refbits != nil && *refbits != bits {
		if *refbits != 16 && newV < 3 {
			return errors.New("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
		}
		bits = *refbits
	}
	if lazy != nil && *lazy && h.CompatibleFeatures&format.CompatLazyRefcounts == 0 && newV < 3 {
		return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
	}
	if newV >= h.Version {
		return nil
	}
	switch {
	case bits != 16:
		return errors.New("compat=0.10 requires refcount_bits=16")
	case h.IncompatibleFeatures&format.IncompatDataFile != 0:
		return errors.New("Cannot downgrade an image with a data file")
	case h.IncompatibleFeatures&^(format.IncompatDirty|format.IncompatCompression) != 0:
		return fmt.Errorf("Cannot downgrade an image with incompatible features 0x%x set", h.IncompatibleFeatures&^(format.IncompatDirty|format.IncompatCompression))
	}
	return nil
}

// sameName compares an option given or not (nil) with a header's name,
// "" where there is none, as QEMU's g_strcmp0 compares them (an empty
// name given is not no name).
func sameName(given *string, have string) bool {
	if given == nil {
		return have == ""
	}
	return have != "" && *given == have
}

// checkAmendDataFile refuses data_file on an image without an external
// data file and data_file_raw=on on one whose data file is not raw, in
// QEMU's words (qcow2.SetDataFile, SetDataFileRaw say the same later).
func checkAmendDataFile(h *format.Header, r *amendRequest) error {
	if r.dataFile != nil && h.IncompatibleFeatures&format.IncompatDataFile == 0 {
		return qcow2.ErrSetDataFileName
	}
	if r.dataFileRaw != nil && *r.dataFileRaw && h.AutoclearFeatures&format.AutoclearDataFileRaw == 0 {
		return qcow2.ErrSetDataFileRaw
	}
	return nil
}
