package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// createRequest is a parsed qimg create command line.
type createRequest struct {
	path    string            // as given: messages and the "Formatting" line say it
	file    string            // the host file it stands for (protocol.Path)
	late    error             // what qemu-img refuses only after "Formatting"
	shown   map[string]string // values refused late, as "Formatting" shows them
	format  string
	opts    qcow2.CreateOptions
	given   map[string]bool // options set explicitly (qemu prints some only then)
	sizeSet bool
	unsafe  bool // -u: the backing file is not opened when size and format are given
	vpc     vpcCreate
	vmdk    vmdkCreate
	luks    luksCreate
	// hintSize is extent_size_hint as given, in bytes (the Formatting
	// line's; opts.Hints holds what is set).
	hintSize uint64
	// filePrealloc is the file driver's preallocation as given for a
	// vmdk or vpc image (create_hints.go): shown, checked, no effect.
	filePrealloc string
}

// vpcCreate are a VHD image's create options (-f vpc).
type vpcCreate struct {
	subformat string // as given: "" (dynamic), "dynamic" or "fixed"
	forceSize string // as given ("" when not); forced when on
	forced    bool
}

func runCreate(e *env, args []string) int {
	o, err := e.getopt(args, "f:o:b:F:quU", "object:")
	if err != nil {
		return e.usageErr(err)
	}
	if _, err := o.secrets(); err != nil {
		// qemu-img creates the --object objects as it reads them,
		// before anything else (whatever the image needs of them).
		return e.errorf(1, "%v", err)
	}
	if err := o.optionLists(); err != nil {
		return e.errorf(1, "%v", err)
	}
	if code, done := e.answerOptionsHelp(o, o.get("f", "qcow2")); done {
		return code
	}
	req, err := parseCreateArgs(o)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return e.usageErr(ue.error)
		}
		return e.errorf(1, "%v", err)
	}
	if err := parseCreate(o, req); err != nil {
		return e.errorf(1, "%s: %v", req.path, err)
	}
	if err := resolveCreateSize(req); err != nil {
		return e.errorf(1, "%s: %v", req.path, err)
	}
	if !o.has("q") {
		fmt.Fprintln(e.stdout, formattingLine(req))
	}
	req.opts.Hints.Warn = func(msg string) { fmt.Fprintf(e.stderr, "qimg: create: warning: %s\n", msg) }
	// The file driver's refusal comes first, as in qemu-img: it
	// creates the file before the format looks at its options.
	err = req.opts.Hints.Check()
	if err == nil && req.format == "qcow2" {
		// QEMU's order: the data file is created, then the options
		// are parsed (an enum's value refused: req.late), then the
		// driver checks them.
		err = checkDataFileGiven(req)
		if err == nil {
			err = req.late
		}
		if err == nil {
			err = checkQcow2Create(&req.opts, req.given)
		}
	}
	if err == nil {
		err = doCreate(req)
	}
	if err != nil {
		return e.errorf(1, "%s: %v", req.path, err)
	}
	return 0
}

// usageError is a command-line error that the usage line follows.
type usageError struct{ error }

// parseCreateArgs reads create's file name and size, as qemu-img does
// before anything else (its messages).
func parseCreateArgs(o *opts) (*createRequest, error) {
	req := &createRequest{format: o.get("f", "qcow2"), given: map[string]bool{}, unsafe: o.has("u")}
	switch len(o.args) {
	case 0:
		return nil, usageError{errors.New("Expecting image file name")}
	case 1:
	case 2:
		n, err := cvtnum("image size", o.args[1])
		if err != nil {
			return nil, err
		}
		req.opts.Size, req.sizeSet = n, true
	default:
		return nil, usageError{fmt.Errorf("Unexpected argument: %s", o.args[2])}
	}
	req.path, req.file = o.args[0], o.args[0]
	return req, nil
}

// parseCreate reads create's format and options into req (errors in
// qemu-img's words, which it prints after the file name).
func parseCreate(o *opts, req *createRequest) error {
	if req.format != "qcow2" && req.format != "raw" && req.format != "vpc" && req.format != "vmdk" && req.format != "luks" {
		return outFormatError(req.format)
	}
	if err := req.resolveFile(); err != nil {
		return err
	}
	sizeArg := req.sizeSet
	enumErrs := map[string]error{} // a key's refused value, unless given again
	for _, s := range o.vals["o"] {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return err
		}
		for _, p := range kv {
			if isHintOption(p[0]) {
				if err := req.setHintOption(p[0], p[1]); err != nil {
					return err
				}
				continue
			}
			if (req.format == "vpc" || req.format == "vmdk") && p[0] == "preallocation" {
				req.filePrealloc, req.given[p[0]] = p[1], true
				continue
			}
			if req.format == "vpc" {
				if err := req.setVPCOption(p[0], p[1]); err != nil {
					return err
				}
				continue
			}
			if req.format == "vmdk" {
				if err := req.setVMDKOption(p[0], p[1]); err != nil {
					return err
				}
				continue
			}
			if req.format == "luks" {
				if err := req.setLUKSOption(p[0], p[1]); err != nil {
					return err
				}
				continue
			}
			if req.format == "raw" {
				if _, err := checkOptionType(rawCreateOptions, p[0], p[1]); err != nil {
					return err
				}
				if p[0] == "preallocation" && p[1] == "metadata" {
					return fmt.Errorf("Unsupported preallocation mode: %s", p[1])
				}
				if p[0] == "preallocation" && p[1] != "off" && p[1] != "falloc" && p[1] != "full" {
					return fmt.Errorf("invalid parameter value: %s", p[1])
				}
			}
			if req.shown == nil {
				req.shown = map[string]string{}
			}
			delete(req.shown, p[0]) // the last value given is the one used
			delete(enumErrs, p[0])
			if err := setCreateOption(&req.opts, p[0], p[1]); err != nil {
				var ee *enumError
				if !errors.As(err, &ee) {
					return err
				}
				enumErrs[p[0]] = err // refused after "Formatting", as qemu-img
				req.shown[p[0]] = p[1]
			}
			req.given[p[0]] = true
			if p[0] == "encryption" {
				req.shown["encryption"] = p[1] // as given, as QEMU shows it
			}
			if p[0] == "compat" {
				req.shown["compat"] = p[1] // v3 stays v3 in the Formatting line
			}
			switch p[0] {
			case "lazy_refcounts", "extended_l2", "data_file_raw":
				req.shown[p[0]] = p[1] // yes, true, y as given, as QEMU shows them
			}
			if p[0] == "size" {
				req.sizeSet = req.opts.Size != -1
			}
		}
	}
	// QEMU drops encryption=off, turns "on" into the AES format and
	// renames the option to encrypt.format (refused beside it, before
	// any value is checked), its other spellings of a boolean (yes,
	// true, n...) kept as format names.
	if enc := req.shown["encryption"]; req.given["encryption"] && enc != "off" {
		switch {
		case req.given["encrypt.format"]:
			req.late = errors.New("'encrypt.format' and its alias 'encryption' can't be used at the same time")
		case enc != "on":
			enumErrs["encrypt.format"] = fmt.Errorf("Parameter 'format' does not accept value '%s'", enc)
		}
	} else if req.given["encryption"] && !req.given["encrypt.format"] {
		req.opts.Encrypt.Format = "" // encryption=on,encryption=off: the last one
	}
	for _, k := range lateEnumOrder {
		if err := enumErrs[k]; err != nil && req.late == nil {
			req.late = err
		}
	}
	if err := req.checkFilePrealloc(); err != nil && req.late == nil {
		req.late = err
	}
	if sizeArg && req.given["size"] {
		return errors.New("The image size must be specified only once")
	}
	if b := o.get("b", ""); b != "" {
		req.opts.BackingFile = b
		req.given["backing_file"] = true
	}
	if f := o.get("F", ""); f != "" {
		req.opts.BackingFormat = f
		req.given["backing_fmt"] = true
	}
	switch bf := req.opts.BackingFormat; {
	case bf == "", bf == "qcow2", bf == "raw", bf == "vmdk", bf == "vpc", bf == "luks": // vmdk, vpc and luks read-only (qcow2's Q23)
	case req.opts.BackingFile != "":
		return backingFormatError(bf)
	case !imgopen.QemuDriver(bf):
		// No backing file to open: QEMU's qcow2 driver refuses the
		// name as one of its enum values, after "Formatting" (a
		// driver it knows: "Backing format cannot be used without
		// backing file", checkQcow2Create).
		if req.late == nil {
			req.late = &enumError{param: "backing-fmt", value: bf}
		}
	}
	if err := o.resolveEncrypt(&req.opts.Encrypt); err != nil {
		return err
	}
	if req.format == "luks" {
		req.lookupLUKSSecret(o)
	}
	if (req.format == "raw" || req.format == "vpc" || req.format == "luks") && req.opts.BackingFile != "" {
		return fmt.Errorf("Backing file not supported for file format '%s'", req.format)
	}
	if !req.sizeSet && req.opts.BackingFile == "" {
		return fmt.Errorf("Image creation needs a size parameter")
	}
	return nil
}

// lateEnumOrder is the order in which QEMU's qcow2 driver checks the
// enum options (its create structure's), so that of several refused
// values qimg names the one qemu-img names.
var lateEnumOrder = []string{"compat", "encrypt.format", "encrypt.cipher-alg",
	"encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg",
	"encrypt.hash-alg", "preallocation", "compression_type"}

// resolveCreateSize checks the backing file as qemu-img create does (it
// opens it unless -u, and refuses the image's own name) and fills the
// size and backing format from it when they were not given.
func resolveCreateSize(req *createRequest) error {
	o := &req.opts
	if o.BackingFile == "" {
		return nil
	}
	if o.BackingFile == req.path {
		// An image backed by itself opens nowhere.
		return errors.New("Error: Trying to create an image with the same filename as the backing file")
	}
	if req.unsafe && req.sizeSet && o.BackingFormat != "" {
		return nil
	}
	if req.unsafe && o.BackingFormat == "" {
		// qemu-img -u does not open the backing file to say what it
		// found, with or without a size.
		return errors.New("Backing file specified without backing format")
	}
	if req.unsafe && !req.sizeSet {
		// Nor to take its size (qemu-img's refusal too).
		return errors.New("Image creation needs a size parameter")
	}
	bpath := pathCombine(req.file, o.BackingFile)
	if o.BackingFormat == "" {
		// A backing file of another format: qemu-img opens it, then
		// says what it found (below); qring cannot open it.
		if f, err := qcow2.Probe(bpath); err == nil && f != "qcow2" && f != "raw" {
			return fmt.Errorf("Backing file specified without backing format\nDetected format of %s.", f)
		}
	}
	// For its size only: QEMU opens it without I/O (BDRV_O_NO_IO), so a
	// LUKS volume needs no key, and with force-share (bdrv_img_create),
	// so an image a VM writes takes an overlay (a live snapshot).
	img, err := openImage(imgopen.Spec{Path: bpath, Format: o.BackingFormat, ReadOnly: true,
		Opts: qcow2.Options{NoBacking: true, NoKey: true, ForceShare: true}})
	if err != nil {
		// QEMU opens the backing file without qemu-img's "Could not
		// open" around the file driver's (which has its own) or the
		// format driver's ("Image is not in qcow2 format").
		var oe *OpenError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return fmt.Errorf("%v\nCould not open backing image.", err)
	}
	defer img.Close()
	if o.BackingFormat == "" {
		// As qemu-img since 6.1: the format is not guessed into the
		// header (a raw file holding an image header would be
		// taken for that image).
		return fmt.Errorf("Backing file specified without backing format\nDetected format of %s.", img.Format())
	}
	if !req.sizeSet {
		if o.Size, err = img.Dev.Size(); err != nil {
			return err
		}
	}
	return nil
}

// formattingLine is qemu-img create's "Formatting 'FILE', fmt=..." line.
func formattingLine(req *createRequest) string {
	o := req.opts
	var b strings.Builder
	fmt.Fprintf(&b, "Formatting '%s', fmt=%s ", req.path, req.format)
	switch req.format {
	case "raw":
		// The file driver's options in its order.
		fmt.Fprintf(&b, "size=%d%s", o.Size, req.nocowShown())
		if req.given["preallocation"] {
			fmt.Fprintf(&b, " preallocation=%s", o.Preallocation)
		}
		return b.String() + req.hintShown()
	case "vmdk":
		b.WriteString(vmdkFormatting(req))
		return b.String() + req.nocowShown() + req.preallocShown() + req.hintShown()
	case "luks":
		b.WriteString(luksFormatting(req))
		return b.String() + req.nocowShown() + req.hintShown()
	case "vpc":
		fmt.Fprintf(&b, "size=%d", o.Size)
		if req.given["subformat"] {
			fmt.Fprintf(&b, " subformat=%s", req.vpc.subformat)
		}
		if req.given["force_size"] {
			fmt.Fprintf(&b, " force_size=%s", req.vpc.forceSize)
		}
		return b.String() + req.nocowShown() + req.preallocShown() + req.hintShown()
	}
	b.WriteString(encryptLine(req))
	cs := o.ClusterSize
	if cs == 0 && !req.given["cluster_size"] {
		cs = 65536
	}
	fmt.Fprintf(&b, "cluster_size=%d extended_l2=%s ", cs, req.show("extended_l2", onOff(o.ExtendedL2)))
	if req.given["preallocation"] {
		fmt.Fprintf(&b, "preallocation=%s ", req.show("preallocation", o.Preallocation))
	}
	ct := req.show("compression_type", o.CompressionType)
	if ct == "" {
		ct = "zlib"
	}
	fmt.Fprintf(&b, "compression_type=%s size=%d ", ct, o.Size)
	if req.given["compat"] {
		fmt.Fprintf(&b, "compat=%s ", req.show("compat", o.Compat))
	}
	if o.BackingFile != "" {
		fmt.Fprintf(&b, "backing_file=%s ", strings.ReplaceAll(o.BackingFile, ",", ",,")) // as QEMU prints option values
	}
	if o.BackingFormat != "" {
		fmt.Fprintf(&b, "backing_fmt=%s ", o.BackingFormat)
	}
	if req.given["data_file"] {
		fmt.Fprintf(&b, "data_file=%s ", strings.ReplaceAll(o.DataFile, ",", ",,"))
	}
	if req.given["data_file_raw"] {
		fmt.Fprintf(&b, "data_file_raw=%s ", req.show("data_file_raw", onOff(o.DataFileRaw)))
	}
	rb := o.RefcountBits
	if rb == 0 && !req.given["refcount_bits"] {
		rb = 16
	}
	fmt.Fprintf(&b, "lazy_refcounts=%s refcount_bits=%d", req.show("lazy_refcounts", onOff(o.LazyRefcounts)), rb)
	return b.String() + req.nocowShown() + req.hintShown()
}

// show is option k's value v as the "Formatting" line shows it: as
// given, when it was refused for qemu-img to refuse later.
func (req *createRequest) show(k, v string) string {
	if s, ok := req.shown[k]; ok {
		return s
	}
	return v
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// resolveFile reads the file name as qemu-img does (protocol.Path): a
// protocol it refuses before printing "Formatting" fails here, one it
// refuses only when it creates is kept for doCreate.
func (req *createRequest) resolveFile() error {
	f, err := protocol.Path(req.path, true)
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe) && !pe.Early():
		req.late = err
	case err != nil:
		return err
	default:
		req.file = f
	}
	return nil
}

// doCreate creates the image. A file too large for the file system
// (EFBIG, from the size or its preallocation) is the format's limit in
// qemu-img's words (bdrv_img_create), for every format.
func doCreate(req *createRequest) error {
	err := createFormat(req)
	if errors.Is(err, syscall.EFBIG) {
		hint := ""
		if req.format == "qcow2" { // the only format with a cluster_size option
			hint = " (try using a larger cluster size)"
		}
		return fmt.Errorf("The image size is too large for file format '%s'%s", req.format, hint)
	}
	return err
}

// createFormat creates the image in req's format.
func createFormat(req *createRequest) error {
	if req.late != nil {
		return req.late
	}
	if imgopen.IsNBDName(req.file) {
		return createOnNBD(req) // create_nbd.go
	}
	switch req.format {
	case "raw", "vpc", "vmdk", "luks":
		if err := req.opts.Hints.Check(); err != nil {
			return err
		}
	}
	if hugeSize(req.opts.Size) && roundSector(req.opts.Size) == 0 && req.format != "vmdk" {
		req.opts.Size = 0 // create_huge.go
	}
	switch req.format {
	case "raw":
		return createRaw(req.file, req.opts.Size, req.opts.Preallocation, req.opts.Hints)
	case "vpc":
		return createVPC(req.file, req.opts.Size, req.vpc, req.opts.Hints)
	case "vmdk":
		return createVMDK(req.file, req.opts.Size, req)
	case "luks":
		return createLUKS(req)
	}
	op, err := imgopen.Opener("writeback", "")
	if err != nil {
		return err
	}
	o := req.opts
	o.Opener = op
	huge := hugeSize(o.Size)
	if huge {
		// The engine refuses 2^62 with the same files left behind as
		// any size too large; the words are the size's (create_huge.go).
		o.Size = 1 << 62
	}
	if err := qcow2.Create(req.file, o); err != nil {
		var de *qcow2.DataFileCreateError
		if errors.As(err, &de) {
			return de // QEMU's words, with the data file's name
		}
		if errors.Is(err, qcow2.ErrSizeTooLarge) {
			if huge {
				return qcow2HugeSizeErr(req.opts.Size)
			}
			return errQcow2TooLarge
		}
		return createErr(req.file, err)
	}
	return nil
}

// createErr is the file driver's refusal to create path, in QEMU's words
// ("Could not create 'FILE': No such file or directory").
func createErr(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("Could not create '%s': %w", path, &capitalized{err: pe.Err})
	}
	return err
}

// allocateFirstBlock writes zeros over the start of a new raw file of
// size bytes, as QEMU's file driver does when it grows an empty file
// (allocate_first_block: 4 KiB, or one sector in a smaller file), so
// that the file's first block is data, not a hole, in qemu-img's map.
func allocateFirstBlock(f block.Device, size int64) error {
	n := int64(4096)
	if size < n {
		n = 512
	}
	return f.Writev(0, [][]byte{make([]byte, n)})
}

// createRaw makes a raw image of size (rounded up to 512 bytes, as
// qemu-img does). An existing file is emptied only once qimg holds its
// write lock, so an image another process uses is left untouched.
//
// prealloc falloc or full allocates the whole file as QEMU's file driver
// does (fallocate; zeros written); off (or "") leaves it sparse but for
// its first block.
func createRaw(path string, size int64, prealloc string, hints qcow2.FileHints) error {
	return createEmpty(path, hints, func(f *uring.File) error { return fillRaw(f, path, size, prealloc) })
}

// createEmpty opens the file at path (made if need be), takes its write
// lock (write and resize, shared with nobody), empties it and lets fill
// write the new image, then closes it: an image another process uses
// is left untouched.
func createEmpty(path string, hints qcow2.FileHints, fill func(f *uring.File) error) error {
	f, err := uring.Open(path, uring.Options{Create: true, Perm: 0o644, Backend: uring.Threads})
	if err != nil {
		return createErr(path, err)
	}
	perm, shared := qcow2.LockPerms(qcow2.FormatQcow2, false, false, false)
	err = qcow2.LockAs(f, path, perm, shared)
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		hints.Apply(f) // while the file is empty, as QEMU's file driver
		err = fill(f)
	}
	if err == nil {
		// A LUKS header, a flat VMDK extent: durable before create
		// says done, as qemu-img's close flushes them (a File's Close
		// does not).
		err = f.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fillRaw is createRaw's image in the emptied file f.
func fillRaw(f *uring.File, path string, size int64, prealloc string) error {
	if roundSector(size) < 0 { // create_huge.go
		if prealloc == "falloc" || prealloc == "full" {
			return errors.New("Cannot use preallocation for shrinking files")
		}
		return errRawNegative
	}
	err := f.Truncate((size + 511) &^ 511)
	if err == nil && size > 0 && !isBlockDevice(path) {
		if prealloc == "falloc" || prealloc == "full" {
			err = f.Truncate(0)
			if err == nil {
				err = growRawPrealloc(path, (size+511)&^511, prealloc)
			}
		} else {
			err = allocateFirstBlock(f, (size+511)&^511)
		}
	}
	if err == nil && isBlockDevice(path) {
		// A device keeps its old bytes: zero the first sector, as
		// qemu-img does, so no old format is found there.
		err = f.WriteZeroes(0, min(size, 512), 0)
	}
	return err
}
