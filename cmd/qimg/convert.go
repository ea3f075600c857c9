package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
)

// convertBufSize is qemu-img convert's buffer (buf_sectors, 2 MiB): data
// is read, searched for zeros and written in chunks of at most this much,
// counted from the start of each run of one source block status.
const convertBufSize = 2 << 20

// convertOut is the output of a convert.
type convertOut struct {
	dev block.Device
	// align is the output's request alignment in bytes.
	align int64
	// zeroInit says the output reads as zeros already (an image convert
	// created): the zeros convert leaves out are not written at all.
	// Without it (convert -n: an existing image, which may hold old data)
	// they are written with WriteZeroes (MayUnmap), as qemu-img does.
	zeroInit bool
	// backing says the output has a backing file that holds what the
	// source's backing chain holds (convert -B): the source's own layer
	// alone is copied, what it leaves to its backing file is left
	// unallocated, and its zeros are written (qemu-img's
	// target_has_backing). backingEnd is the size of a new output's
	// backing file, past which the output reads as zeros anyway (-1:
	// not known, an existing output).
	backing    bool
	backingEnd int64
	// copyRange is -C (copy offloading): qemu-img copies the source's
	// data runs as they are, without looking for zeros in them.
	copyRange bool
	// salvage (--salvage) turns what cannot be read into zeros, sector
	// by sector, each reported through warn (nil: quiet), as qemu-img.
	salvage bool
	warn    func(format string, a ...any)
	// writethrough (-t writethrough or directsync): dev flushes each
	// write itself; a compressed write, made around it, is flushed
	// after it.
	writethrough bool
}

// salvaged reports a sector --salvage turned into zeros.
func (o convertOut) salvaged(format string, a ...any) {
	if o.warn != nil {
		o.warn(format, a...)
	}
}

// leaveOut makes [off, off+n) of the output read as zeros where convert
// leaves the source's zeros out.
func (o convertOut) leaveOut(off, n int64) error {
	if o.zeroInit || n == 0 {
		return nil
	}
	return o.dev.WriteZeroes(off, n, block.MayUnmap)
}

// convertImage copies the guest contents of src to dst the way qemu-img
// convert does, so that the same areas of the output end up allocated:
// it walks the source's block status (walkConvert); runs that read as
// zeros are left out (dst.leaveOut), unless sparse is 0; data runs are
// read in chunks of convertBufSize and written except for the zeros
// qemu-img's is_allocated_sectors_min leaves out (runs of at least sparse
// bytes, with ends aligned to the largest power of two sectors in sparse,
// or to dst.align if larger). With sparse 0 nothing is left out: every
// byte is written, zeros too, and the output is fully allocated (as
// qemu-img). progress, if set, is called as qemu-img's is: with the bytes
// of the chunks copied so far, before each is read, out of all it will
// copy (a first walk counts them), and not for what is left out.
func convertImage(src *convertSrc, dst convertOut, sparse int64, progress func(done, total int64)) error {
	minSec := sparse / 512
	alignSec := max(pow2Floor(minSec), (dst.align+511)/512)
	w := convertWalk{src: src, dst: dst, sparse: sparse, buf: convertBufSize}
	total, err := w.copyBytes(progress != nil)
	if err != nil {
		return err
	}
	var done int64 // qemu-img's allocated_done, in bytes
	read := func(s convertStep, p []byte) error {
		if s.zero {
			clear(p)
		} else if err := readSrc(src, dst, s.off, p); err != nil {
			return &convertIOError{"reading", s.off, err}
		}
		return nil
	}
	write := func(s convertStep, p []byte) error {
		switch s.kind {
		case stepBacking:
			return nil
		case stepLeaveOut:
			if err := dst.leaveOut(s.off, s.n); err != nil {
				return &convertIOError{"writing", s.off, err}
			}
			return nil
		}
		if progress != nil {
			done += s.n
			progress(done, total)
		}
		ms := minSec
		if dst.copyRange && !s.zero {
			ms = 0
		}
		if err := writeChunk(dst, s.off, p, ms, alignSec); err != nil {
			return &convertIOError{"writing", s.off, err}
		}
		return nil
	}
	if dst.salvage {
		// Serial: each warning of a sector turned into zeros comes
		// after what was written before it, and none after a failed
		// write.
		buf := make([]byte, convertBufSize)
		err = w.walk(func(s convertStep) error {
			// Only a copy has bytes (and is at most the buffer's
			// length); a run of zeros or one left out can be longer.
			var p []byte
			if s.kind == stepCopy {
				p = buf[:s.n]
				if err := read(s, p); err != nil {
					return err
				}
			}
			return write(s, p)
		})
	} else {
		err = pipeWalk(w, read, write)
	}
	if err != nil {
		return err
	}
	return dst.dev.Flush()
}

// readSalvaging is readPadded, with --salvage's retry: on an error the
// chunk is read again sector by sector, and a sector that cannot be read
// reads as zeros (reported).
func readSalvaging(src *image, dst convertOut, off int64, p []byte) error {
	err := readPadded(src, off, p)
	if err == nil || !dst.salvage {
		return err
	}
	for i := 0; i < len(p); i += 512 {
		q := p[i:min(i+512, len(p))]
		if err := readPadded(src, off+int64(i), q); err != nil {
			dst.salvaged("error while reading offset %d: %v", off+int64(i), err)
			clear(q)
		}
	}
	return nil
}

// readPadded reads p at off from src, with zeros for what lies past the
// end of the source (the rest of its last sector).
func readPadded(src *image, off int64, p []byte) error {
	n := max(min(int64(len(p)), src.size-off), 0)
	clear(p[n:])
	if n == 0 {
		return nil
	}
	return src.dev.Readv(off, [][]byte{p[:n]})
}

// writeChunk writes the chunk p (whole sectors) read at off, leaving out
// the zeros qemu-img convert leaves out (is_allocated_sectors_min with
// minSec and alignSec sectors; nothing with minSec 0).
func writeChunk(dst convertOut, off int64, p []byte, minSec, alignSec int64) error {
	if minSec == 0 {
		return dst.dev.Writev(off, [][]byte{p})
	}
	for len(p) > 0 {
		n, data := allocatedSectorsMin(p, minSec, off/512, alignSec)
		b := n * 512
		var err error
		if data {
			err = dst.dev.Writev(off, [][]byte{p[:b]})
		} else {
			err = dst.leaveOut(off, b)
		}
		if err != nil {
			return err
		}
		off, p = off+b, p[b:]
	}
	return nil
}

// allocatedSectors is qemu-img's is_allocated_sectors for the sectors of
// p, the first of which is sector: how many sectors from the first are
// zero or data alike (data: not all zero), with the end of the run moved
// to a multiple of alignSec sectors where the run stops inside p (a data
// run's end up, a zero run's down; a zero run that would vanish counts as
// data).
func allocatedSectors(p []byte, sector, alignSec int64) (int64, bool) {
	ns := int64(len(p)) / 512
	if ns <= 0 {
		return 0, false
	}
	zero := isZero(p[:512])
	i := int64(1)
	for i < ns && isZero(p[i*512:(i+1)*512]) == zero {
		i++
	}
	if i == ns {
		return i, !zero
	}
	if tail := (sector + i) & (alignSec - 1); tail != 0 {
		if zero && i <= tail {
			zero = false
		}
		if !zero {
			i = min(i+alignSec-tail, ns)
		} else {
			i -= tail
		}
	}
	return i, !zero
}

// allocatedSectorsMin is qemu-img's is_allocated_sectors_min: like
// allocatedSectors, but a data run goes on over runs of zeros shorter
// than minSec sectors, so that small holes do not split the writes.
func allocatedSectorsMin(p []byte, minSec, sector, alignSec int64) (int64, bool) {
	ns := int64(len(p)) / 512
	minSec = min(minSec, ns)
	n, data := allocatedSectors(p, sector, alignSec)
	if !data {
		return n, false
	}
	used, checked := n, n
	for checked < ns {
		k, d := allocatedSectors(p[checked*512:], sector+checked, alignSec)
		checked += k
		if d {
			used = checked
		} else if k >= minSec {
			break
		}
	}
	return used, true
}

// pow2Floor is the largest power of two not above n (0 for 0).
func pow2Floor(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return 1 << (bits.Len64(uint64(n)) - 1)
}

var zeroSector [512]byte

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroSector))
		if !bytes.Equal(b[:n], zeroSector[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func runConvert(e *env, args []string) int {
	o, err := e.getopt(args, "f:O:o:pt:T:S:qUWm:cnB:F:Cr:l:", "force-share", "object:", "image-opts", "target-is-zero", "salvage",
		"bitmaps", "skip-broken-bitmaps", "target-image-opts")
	if err != nil {
		return e.usageErr(err)
	}
	if err := o.optionLists(); err != nil {
		return e.errorf(1, "%v", err)
	}
	// -n: the output exists, and is written into (qemu-img's skip_create).
	skipCreate := o.has("n")
	snap, err := o.snapshotOpt()
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	var rate int64
	if o.has("r") {
		if rate, err = parseRate(o.get("r", "")); err != nil {
			return e.errorf(1, "%v", err)
		}
	}
	// -S, as qemu-img reads it with the options (each given, before
	// the checks below).
	sparse := int64(4096)
	for _, v := range o.vals["S"] {
		if sparse, err = cvtnum("buffer size for sparse output", v); err != nil {
			return e.errorf(1, "%v", err)
		}
		if sparse%512 != 0 || sparse > 16<<20 {
			return e.errorf(1, "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).")
		}
	}
	// -m: qimg converts in order, one request at a time; the number is
	// checked as qemu-img checks it (strtol in base 0, 1 to 16).
	for _, v := range o.vals["m"] {
		if n, err := strconv.ParseInt(v, 0, 64); err != nil || n < 1 || n > 16 {
			return e.errorf(1, "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
		}
	}
	if o.has("skip-broken-bitmaps") && !o.has("bitmaps") {
		return e.errorf(1, "Use of --skip-broken-bitmaps requires --bitmaps")
	}
	if o.has("C") && o.has("c") {
		return e.errorf(1, "Cannot enable copy offloading when -c is used")
	}
	if o.has("C") && o.has("S") {
		return e.errorf(1, "Cannot enable copy offloading when -S is used")
	}
	if o.has("C") && o.has("salvage") {
		return e.errorf(1, "Cannot use copy offloading in salvaging mode")
	}
	// --target-image-opts: the output is an option string, as
	// --image-opts makes the inputs; qemu-img takes it only for an
	// existing output.
	tgtOpts := o.has("target-image-opts")
	if tgtOpts && !skipCreate {
		return e.errorf(1, "--target-image-opts requires use of -n flag")
	}
	if skipCreate && len(o.vals["o"]) > 0 {
		return e.errorf(1, "-o has no effect when skipping image creation")
	}
	// --target-is-zero: the user says the existing output reads as
	// zeros, so convert leaves the zeros out as it does in an image it
	// created (qemu-img's has_zero_init).
	if o.has("target-is-zero") && !skipCreate {
		return e.errorf(1, "--target-is-zero requires use of -n flag")
	}
	if code, done := e.answerOptionsHelp(o, o.get("O", "raw")); done {
		return code
	}
	if len(o.args) < 2 {
		return e.errorf(1, "Must specify image file name")
	}
	// Several inputs are written one after another (convertSrc).
	ins, out := o.args[:len(o.args)-1], o.args[len(o.args)-1]
	ofmt := o.get("O", "raw")
	if ofmt != "raw" && ofmt != "qcow2" && ofmt != "vpc" && ofmt != "vmdk" && ofmt != "luks" && !tgtOpts {
		return e.errorf(1, "%v", outFormatError(ofmt))
	}
	// qemu-img reads -T, then -t (which it reads only after creating the
	// output: qimg refuses it before).
	srcCache, err := o.cacheOpt(true)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	cache, err := o.cacheOpt(false)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	// -p: from here on, qemu-img prints its 0% first and a new line
	// last, whatever happens.
	var progress func(done, total int64)
	if o.has("p") && !o.has("q") {
		progress = progressPrinter(e.stdout)
		progress(0, 1)
		defer fmt.Fprintln(e.stdout)
	}
	if o.has("image-opts") && o.has("f") {
		return e.errorf(1, "--image-opts and --format are mutually exclusive")
	}
	var sources openedSources
	defer func() { sources.Close() }()
	paths := make([]string, len(ins))
	for i, in := range ins {
		sspec, err := o.imageSpec(in, imgopen.Spec{Format: o.get("f", ""), Cache: srcCache.imgopen(), ReadOnly: true,
			Opts: qcow2.Options{ForceShare: o.forceShare()}})
		if err != nil {
			return e.usageErr(err)
		}
		paths[i] = sspec.Path
		simg, err := openImage(sspec)
		if err != nil {
			return e.errorf(1, "%v", specOpenError(o.has("image-opts"), in, err))
		}
		sources = append(sources, simg)
	}
	simg := sources[0]
	if snap != nil {
		// qemu-img loads snapshot.id=/snapshot.name= into the first
		// input alone, and refuses a bare name with several.
		if len(sources) > 1 && snap.Either {
			return e.errorf(1, "No support for concatenating multiple snapshot")
		}
		if err := simg.LoadSnapshot(*snap); err != nil {
			return e.errorf(1, "%v", err)
		}
	}
	// The output: a file name, or with --target-image-opts an option
	// string naming it (with -n only, so never created here).
	outFile, outErr := out, error(nil)
	if !tgtOpts {
		// A protocol prefix, as qemu-img reads it (protocol.Path):
		// refused here when qemu-img refuses it before the output's
		// options, else when the output is created or opened.
		f, err := protocol.Path(out, !skipCreate)
		var pe *protocol.Error
		switch {
		case err != nil && skipCreate:
			return e.errorf(1, "Could not open '%s': %v", out, err)
		case errors.As(err, &pe) && pe.Early():
			return e.errorf(1, "%v", err)
		case err != nil:
			outErr = err
		default:
			outFile = f
		}
	}
	// openImage strips a "file:" prefix from Path.
	dspec := imgopen.Spec{Path: out, Format: ofmt, Cache: cache.imgopen(), WrapFile: cache.wrapFile(),
		Opts: qcow2.Options{RepairLog: o.repairLog, Warn: o.openWarn}}
	if strings.HasPrefix(out, "json:") && !o.has("O") {
		// -O given is the target's root driver over the name's, as in
		// QEMU; -O's default (raw) is not: qemu-img convert -n into
		// json:{"driver":"qcow2",...} without -O writes raw bytes over
		// the qcow2 image, qimg through it.
		dspec.Format = ""
	}
	if tgtOpts {
		if o.has("O") {
			return e.errorf(1, "--image-opts and --format are mutually exclusive")
		}
		st, err := o.secrets()
		if err != nil {
			return e.usageErr(err)
		}
		dspec.Format, dspec.Secrets = "", st
		if dspec, err = imgopen.ImageOpts(out, dspec); err != nil {
			return e.usageErr(err)
		}
		out, outFile, ofmt = dspec.Path, dspec.Path, dspec.Format
	}
	var parts []*image
	for i, simg := range sources {
		in := hostPath(paths[i])
		if err := refuseOverwrite(in, outFile, backingChain(in, simg)); err != nil {
			return e.errorf(1, "%v", err)
		}
		p, err := loadImage(simg)
		if err != nil {
			// The map only lets a compressed output skip what is
			// known to be zeros: without it, the block status walk
			// copies what it can read, and fails (or with --salvage
			// reads as zeros sector by sector) where it cannot, at the
			// offset qemu-img names.
			p, err = newImage(simg, nil)
		}
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		parts = append(parts, p)
	}
	src := newConvertSrc(parts)
	req := &createRequest{path: out, file: outFile, late: outErr, format: ofmt, given: map[string]bool{}}
	req.opts.Hints.Warn = func(msg string) { fmt.Fprintf(e.stderr, "qimg: convert: warning: %s\n", msg) }
	var rawPreallocErr error
	for _, s := range o.vals["o"] {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return e.usageErr(err)
		}
		for _, p := range kv {
			k, v := p[0], p[1]
			if isHintOption(k) {
				if err := req.setHintOption(k, v); err != nil {
					return e.errorf(1, "%v", err)
				}
				continue
			}
			if ofmt == "raw" {
				if _, err := checkOptionType(rawCreateOptions, k, v); err != nil {
					return e.errorf(1, "%v", err)
				}
			}
			if (ofmt == "vpc" || ofmt == "vmdk") && k == "preallocation" {
				// The file driver's (create's too).
				req.filePrealloc, req.given[k] = v, true
				if err := req.checkFilePrealloc(); err != nil {
					return e.errorf(1, "%s: error while converting %s: %v", out, ofmt, err)
				}
				continue
			}
			if ofmt == "vpc" && k != "size" {
				if err := req.setVPCOption(k, v); err != nil {
					return e.errorf(1, "%v", err)
				}
				continue
			}
			if ofmt == "vmdk" && k != "size" {
				if err := req.setVMDKOption(k, v); err != nil {
					return e.errorf(1, "%v", err)
				}
				continue
			}
			if ofmt == "luks" && k != "size" {
				if err := req.setLUKSOption(k, v); err != nil {
					return e.errorf(1, "%v", err)
				}
				continue
			}
			if k == "size" {
				// Checked, then set from the inputs (as qemu-img).
				if _, err := checkOptionType(qcow2CreateOptions, k, v); err != nil {
					return e.errorf(1, "%v", err)
				}
				continue
			}
			if ofmt == "raw" && k == "preallocation" && v != "off" && v != "falloc" && v != "full" {
				// Refused when the file driver creates the output.
				rawPreallocErr = fmt.Errorf("invalid parameter value: %s", v)
				if v == "metadata" {
					rawPreallocErr = fmt.Errorf("Unsupported preallocation mode: %s", v)
				}
				continue
			}
			if err := setCreateOption(&req.opts, k, v); err != nil {
				return e.errorf(1, "%v", err)
			}
			req.given[k] = true
		}
	}
	req.opts.Size = src.size
	// -B and -F are -o backing_file and backing_fmt (qemu-img's
	// add_old_style_options: they win over -o).
	if b := o.get("B", ""); b != "" {
		req.opts.BackingFile = b
	}
	if f := o.get("F", ""); f != "" {
		req.opts.BackingFormat = f
	}
	hasBacking := req.opts.BackingFile != ""
	if hasBacking && o.has("target-is-zero") {
		// qemu-img 7.2 stops here with its message, but exits 0 (img_convert
		// jumps to its end with ret still 0) and, with -p, shows the
		// progress it began at 0% as done.
		e.errorf(0, "Cannot use --target-is-zero when the destination image has a backing file")
		if progress != nil {
			progress(1, 1)
		}
		return 0
	}
	if hasBacking && !skipCreate && (ofmt == "raw" || ofmt == "vpc" || ofmt == "luks") {
		return e.errorf(1, "Backing file not supported for file format '%s'", ofmt)
	}
	if hasBacking && len(parts) > 1 {
		return e.errorf(1, "Having a backing file for the target makes no sense when concatenating multiple input images")
	}
	if hasBacking && !skipCreate && req.opts.BackingFormat == "" {
		return e.errorf(1, "Use of backing file requires explicit backing format")
	}
	// qemu-img's checks of a compressed output's create options.
	// A monolithicSparse VMDK takes compressed writes as plain ones
	// (QEMU's vmdk_co_pwritev_compressed): -c changes nothing there.
	if o.has("c") && ofmt != "qcow2" && ofmt != "vmdk" && !skipCreate {
		return e.errorf(1, "Compression not supported for this file format")
	}
	// A flat VMDK has no grains to compress (qemu-img creates it and
	// then fails for the driver's cluster size; qimg before it creates).
	if o.has("c") && ofmt == "vmdk" && !skipCreate && strings.HasSuffix(req.vmdk.subformat, "Flat") {
		return e.errorf(1, "invalid cluster size")
	}
	if o.has("c") && req.opts.Encrypt.Format != "" {
		return e.errorf(1, "Compression and encryption not supported at the same time")
	}
	if o.has("c") && (rawPreallocErr != nil || req.opts.Preallocation != "" && req.opts.Preallocation != qcow2.PreallocOff) {
		return e.errorf(1, "Compression and preallocation not supported at the same time")
	}
	var bitmaps []qcow2.BitmapInfo
	if o.has("bitmaps") {
		if len(parts) > 1 {
			return e.errorf(1, "Copying bitmaps only possible with single source")
		}
		if bitmaps, err = convertBitmapsCheck(simg, o.has("skip-broken-bitmaps")); err != nil {
			return e.errorf(1, "%v", err)
		}
	}
	if !hasBacking && req.opts.BackingFormat != "" && !skipCreate {
		return e.errorf(1, "%s: error while converting %s: Backing format cannot be used without backing file", out, ofmt)
	}
	if rawPreallocErr != nil && !skipCreate {
		return e.errorf(1, "%s: error while converting %s: %v", out, ofmt, rawPreallocErr)
	}
	if err := o.resolveEncrypt(&req.opts.Encrypt); err != nil {
		return e.errorf(1, "%s: %v", out, err)
	}
	if p := req.opts.Encrypt.Passphrase; p != nil {
		dspec.Opts.Passphrase = p // a new encrypted output's (-o encrypt.*)
	}
	if ofmt == "luks" {
		// The output opens with the key its create options name, as
		// qemu-img passes them on as the output's open options.
		req.lookupLUKSSecret(o)
		if req.luks.pass != nil {
			dspec.Opts.Passphrase = req.luks.pass
		}
	}
	_, statErr := os.Stat(outFile)
	created := os.IsNotExist(statErr) && !skipCreate // a failure removes only what it made
	dataCreated := ""                                // and the external data file the create made (-o data_file=)
	if df := req.opts.DataFile; created && ofmt == "qcow2" && df != "" {
		if _, err := os.Stat(df); os.IsNotExist(err) {
			dataCreated = df
		}
	}
	if skipCreate {
		// Opened as it is, with -O's format.
	} else if err := checkConvertCreate(req); err != nil {
		return e.errorf(1, "%s: error while converting %s: %v", out, ofmt, err)
	} else if err := doCreate(req); err != nil {
		if created {
			os.Remove(outFile)
		}
		return e.errorf(1, "%s: error while converting %s: %v", out, ofmt, err)
	}
	if o.has("c") {
		// A compressed output is made for its size: no space reserved
		// ahead (it stayed allocated around the compressed clusters,
		// ten times qemu-img's on disk with refcount_bits=1).
		dspec.Opts.Prealloc = "off"
	}
	dst, err := openImage(dspec)
	if err != nil {
		return e.errorf(1, "%v", specOpenError(tgtOpts, o.args[len(o.args)-1], err))
	}
	dst.GuardProbed(e.stderr) // -n --target-image-opts without driver=: QEMU's raw restriction
	// A new image reads as zeros, except a raw one on a block device or
	// an NBD export (their Caps are Fixed: QEMU has no zero-init on
	// host_device or nbd), whose old bytes stay; an existing one (-n)
	// may hold anything. A new LUKS volume reads as noise (its file's
	// zeros decrypted): no zero-init, as QEMU's crypto driver.
	fixedRaw := dst.Image == nil && dst.VMDK == nil && dst.VHD == nil && dst.LUKS == nil && dst.Dev.Caps().Fixed
	zeroInit := !skipCreate && dst.LUKS == nil && !fixedRaw || o.has("target-is-zero")
	cout := convertOut{dev: withRateLimit(withCache(dst.Dev, cache), rate), writethrough: cache.writethrough, align: 1, zeroInit: zeroInit, // a qcow2 image's alignment in QEMU
		backing: hasBacking, backingEnd: -1, copyRange: o.has("C"), salvage: o.has("salvage")}
	if !o.has("q") {
		cout.warn = func(format string, a ...any) {
			fmt.Fprintf(e.stderr, "qimg: convert: warning: "+format+"\n", a...)
		}
	}
	if hasBacking {
		cout.zeroInit = false // zeros are written over the backing file's data
		if b := backingDev(dst); b != nil && !skipCreate {
			if cout.backingEnd, err = b.Size(); err != nil {
				cout.backingEnd = -1 // an optimization only, as in qemu-img
			}
		}
	}
	if dst.Image == nil {
		cout.align = dst.Dev.Caps().Align
	}
	if o.has("bitmaps") && (dst.Image == nil || dst.Image.Header().Version < 3) {
		// As qemu-img (bdrv_supports_persistent_dirty_bitmap): refused
		// before anything is copied, for a version 2 image too.
		err = fmt.Errorf("Format driver '%s' does not support bitmaps", ofmt)
	} else if o.has("c") && dst.Image == nil && dst.VMDK == nil {
		err = fmt.Errorf("Compression not supported for this file format")
	} else if o.has("c") && dst.VMDK != nil && dst.VMDK.ClusterSize() == 0 {
		// A flat extent has no grains to compress (qemu-img's compressed
		// output needs the driver's cluster size).
		err = fmt.Errorf("invalid cluster size")
	} else {
		err = checkOutputSize(skipCreate, dst.Dev, src.size)
	}
	if err == nil && o.has("c") && dst.Image != nil {
		err = convertCompressed(src, qcow2Compressed{dst.Image}, cout, sparse, progress)
	} else if err == nil && dst.VMDK != nil && dst.VMDK.CreateType() == "streamOptimized" {
		// Every grain is written compressed, whole (vmdk's KD12).
		err = convertCompressed(src, vmdkCompressed{dst.VMDK}, cout, sparse, progress)
	} else if err == nil {
		if ofmt == "raw" && isBlockDevice(out) && !skipCreate {
			// convertImage skips what reads as zeros in the source, so
			// the output must read as zeros first; a device holds old
			// data (QEMU: no zero-init on host_device).
			// Whole sectors, as QEMU sees the image's end.
			var n int64
			if n, err = dst.Dev.Size(); err == nil {
				err = dst.Dev.WriteZeroes(0, min(roundUp(src.size, 512), n), block.MayUnmap)
			}
		}
		if err == nil {
			err = convertImage(src, cout, sparse, progress)
		}
	}
	if err == nil && o.has("bitmaps") {
		// After the copy, as qemu-img: its writes must not dirty them.
		err = convertBitmaps(simg.Image, dst.Image, bitmaps, cout.warn)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil && o.has("c") && dst.Image != nil {
		err = padCompressedEnd(outFile)
	}
	if progress != nil && err == nil {
		progress(1, 1) // qemu-img's 100% at the end, printed again
	}
	if err != nil {
		if created {
			os.Remove(outFile)
		}
		if dataCreated != "" {
			os.Remove(dataCreated)
		}
		return e.errorf(1, "%v", err)
	}
	return 0
}

// padCompressedEnd ends a compressed qcow2 output's file on a whole
// sector, as qemu-img's convert does once it has written the last
// compressed cluster (its zero-length compressed write: the file driver
// truncates the file to its length in sectors). A name that is no
// regular file is left as it is; a json: spec names its file. The new
// length is synced before convert says done.
func padCompressedEnd(name string) error {
	name = imgopen.SpecFilename(name)
	st, err := os.Stat(name)
	if err != nil || !st.Mode().IsRegular() || st.Size()%512 == 0 {
		return nil
	}
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(roundUp(st.Size(), 512))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkOutputSize refuses, with -n, an output smaller than the source
// (both in whole sectors, as qemu-img compares them); a larger one is
// written at its start and the rest is left as it is.
func checkOutputSize(skipCreate bool, dst block.Device, size int64) error {
	if !skipCreate {
		return nil
	}
	n, err := dst.Size()
	if err != nil {
		return fmt.Errorf("unable to get output image length: %w", err)
	}
	if roundUp(n, 512) < roundUp(size, 512) {
		return fmt.Errorf("output file is smaller than input file")
	}
	return nil
}

// backingDev is the backing device of an opened qcow2 image, nil if it
// has none.
func backingDev(img *imgopen.Opened) block.Device {
	if img.Image == nil {
		return nil
	}
	return img.Image.Backing()
}

// isBlockDevice reports whether path is a block device.
func isBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}

// specOpenError is err, an image that could not be opened, named as
// qemu-img names it: by the option string arg when it was given as one
// (--image-opts, --target-image-opts), by its file name otherwise.
func specOpenError(isSpec bool, arg string, err error) error {
	var oe *OpenError
	if !isSpec || !errors.As(err, &oe) {
		return err
	}
	return &OpenError{Path: arg, Err: oe.Err}
}

// checkConvertCreate refuses the output's create options QEMU's qcow2
// driver refuses, in its words, as create does (checkQcow2Create): the
// engine's own refusals said "unsupported feature" in its words.
func checkConvertCreate(req *createRequest) error {
	if req.format != "qcow2" {
		return nil
	}
	return checkQcow2Create(&req.opts, req.given)
}
