package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
)

// ioLongs are qemu-io's long options that stand for a short one (its
// lopt table); runIO reads them under their short names.
var ioLongs = map[string]string{"cmd": "c", "format": "f", "read-only": "r", "snapshot": "s", "nocache": "n",
	"copy-on-read": "C", "misalign": "m", "native-aio": "k", "aio": "i", "discard": "d", "cache": "t",
	"trace": "T", "force-share": "U", "version": "V"}

// ioGetopt parses qimg io's command line: qemu-io's options, short and
// long (--cmd is -c, and the commands of both run in the order given),
// and qimg's -o engine options.
func ioGetopt(e *env, args []string) (*opts, error) {
	longs := []string{"image-opts", "object:", "help"}
	for l, sh := range ioLongs {
		if strings.Contains("cfiTdt", sh) {
			l += ":"
		}
		longs = append(longs, l)
	}
	o, err := e.getopt(args, "c:f:t:i:T:o:rnUkmd:sCV", longs...)
	if err != nil {
		return nil, err
	}
	o.vals = map[string][]string{}
	for i, kv := range o.order {
		if sh, ok := ioLongs[kv[0]]; ok {
			o.order[i][0] = sh
		}
		o.vals[o.order[i][0]] = append(o.vals[o.order[i][0]], kv[1])
	}
	return o, nil
}

func runIO(e *env, args []string) int {
	o, err := ioGetopt(e, args)
	if err != nil {
		return e.usageErr(err)
	}
	if o.has("V") {
		version(e.stdout) // qemu-io -V: its version, nothing else done
		return 0
	}
	eo, err := engineOpts(o)
	if err != nil {
		return e.usageErr(err)
	}
	eo.Warn = o.openWarn
	if len(o.args) > 1 {
		return e.usageErr(fmt.Errorf("expected at most one image file"))
	}
	st, err := o.secrets()
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	sess := &ioSession{out: e.stdout, errOut: e.stderr, secrets: st, imageOpts: o.has("image-opts")}
	if len(o.args) == 1 {
		req, err := ioOpenFlags(o, func(k, _ string) bool { return o.has(k) }) // long names read as short
		if err != nil {
			return e.errorf(1, "%v", err)
		}
		req.path, req.format, req.eo = o.args[0], o.get("f", ""), eo
		req.spec = sess.imageOpts || imgopen.IsSpec(req.path)
		if sess.imageOpts && req.format != "" {
			return e.errorf(1, "--image-opts and -f are mutually exclusive") // qemu-io's
		}
		if err := sess.open(req); err != nil {
			name := req.path // --image-opts: none (qemu-io opens a NULL name with options)
			if sess.imageOpts {
				name = ""
			}
			return e.errorf(1, "%v", openFailed(name, err)) // qemu-io's words
		}
	}
	code := 0
	if o.has("c") {
		for _, c := range o.vals["c"] {
			if sess.quit {
				break
			}
			code = max(code, sess.runLine(e, c))
		}
	} else {
		code = sess.runStdin(e, ioStdin)
	}
	if sess.Opened != nil {
		if err := sess.Dev.Flush(); err != nil {
			code = e.errorf(1, "flush: %v", err)
		}
		if err := sess.Close(); err != nil {
			code = e.errorf(1, "close: %v", err)
		}
	}
	return code
}

// ioStdin is where qimg io reads its commands without -c (a test's
// input in tests).
var ioStdin io.Reader = os.Stdin

// ioPrompt is qemu-io's prompt ("%s> " of its program name, qemu-io):
// qimg io prints qemu-io's, as scripts reading its output expect it.
const ioPrompt = "qemu-io> "

// runLine runs one command line and reports its failure as qemu-io does
// (io_errors.go); it returns the exit status the line leaves: 1 for a
// failed command, 0 for a success or a failed aio request.
func (s *ioSession) runLine(e *env, line string) int {
	err := s.exec(line)
	if err == nil {
		return 0
	}
	reportIOError(e, e.stdout, err)
	if asyncFailed(err) {
		return 0
	}
	return 1
}

// runStdin is qemu-io without -c: its command_loop reads the commands
// from stdin, a line at a time, until the end of it or quit, printing
// its prompt before each read, whether stdin is a terminal or not (the
// readline of a terminal prints the same). A last line without its
// newline runs too (fgets). The exit status is 1 if a command failed.
// (qemu-io reads lines of at most 1023 bytes, cutting longer ones into
// several commands; qimg reads them whole.)
func (s *ioSession) runStdin(e *env, in io.Reader) int {
	r := bufio.NewReader(in)
	code := 0
	for !s.quit {
		fmt.Fprint(s.out, ioPrompt)
		line, err := r.ReadString('\n')
		if line == "" && err != nil {
			break // EOF, or a read error: qemu-io's fgets returns NULL either way
		}
		code = max(code, s.runLine(e, strings.TrimSuffix(line, "\n")))
	}
	return code
}

// ioOpenReq is how qemu-io opens an image: from its command line, or
// with its open command.
type ioOpenReq struct {
	path                           string // a file, or a spec (spec: --image-opts or json:)
	spec                           bool
	format                         string // -f (the command line's only)
	cache                          string // a cacheModes name
	nocache                        bool   // -n
	aio                            string
	noUnmap                        bool // -d ignore: discard does nothing (QEMU's open without BDRV_O_UNMAP)
	readOnly, snapshot, copyOnRead bool
	eo                             qcow2.Options // the engine's options, ForceShare (-U) among them
}

// ioOpenFlags reads the options the command line and open share: -d,
// -i/-k, -t/-n, -r, -s, -C; has(short, long) tells whether one is given.
func ioOpenFlags(o *opts, has func(short, long string) bool) (ioOpenReq, error) {
	var r ioOpenReq
	// -d: qemu-io unmaps by default; ignore (off) makes discard a
	// no-op (write -z -u still unmaps, as qemu-io 7.2's).
	switch d := o.get("d", "unmap"); d {
	case "ignore", "off":
		r.noUnmap = true
	case "unmap", "on":
	default:
		return r, fmt.Errorf("Invalid discard option: %s", d)
	}
	r.aio = o.get("i", "")
	if o.has("k") {
		r.aio = "native" // qemu-io's -k
	}
	switch r.aio {
	case "", "threads", "native", "io_uring", "io_uring-nomerge":
	default:
		return r, fmt.Errorf("Invalid aio option: %s", r.aio)
	}
	// qemu-io's default is writethrough: each write is flushed before
	// it is reported (-n, -t none or writeback turn it off).
	r.nocache = has("n", "nocache")
	def := "writethrough"
	if r.nocache {
		def = "none"
	}
	r.cache = o.get("t", o.get("cache", def))
	if _, ok := cacheModes[r.cache]; !ok {
		return r, &CacheError{Mode: r.cache}
	}
	r.readOnly, r.snapshot, r.copyOnRead = has("r", "read-only"), has("s", "snapshot"), has("C", "copy-on-read")
	return r, nil
}

// open opens the session's image as req says.
func (s *ioSession) open(req ioOpenReq) error { return s.openWarn(req, s.errOut) }

// openWarn is open printing a probed raw image's warning to warn (nil:
// none, for a reopen: QEMU warns when it opens the node, not when it
// reopens it).
func (s *ioSession) openWarn(req ioOpenReq, warn io.Writer) error {
	mode := cacheModes[req.cache]
	cache := mode.imgopen()
	if req.nocache {
		cache = "none"
	}
	if req.spec && !req.readOnly && imgopen.SpecReadOnly(req.path) {
		// read-only=on in the options of a writable open (no -r).
		return errors.New("Block node is read-only")
	}
	sp := imgopen.Spec{Path: req.path, Format: req.format, Cache: cache, AIO: req.aio, ReadOnly: req.readOnly,
		Opts: req.eo, WrapFile: mode.wrapFile(), Secrets: s.secrets}
	img, err := openIOImage(req, sp)
	if err != nil {
		return err
	}
	if !req.readOnly && !req.snapshot {
		// A raw image found by probing (a file name, or a spec without
		// driver=): as QEMU's raw driver, warn, and refuse writes that
		// would make it probe as another format.
		img.GuardProbed(warn)
	}
	img.Dev = withCache(img.Dev, mode) // writethrough: each write flushed, as qemu-io's
	s.Opened, s.path, s.noUnmap, s.writethrough = img, req.path, req.noUnmap, mode.writethrough
	s.req = req
	return nil
}

// openIOImage opens the image qemu-io's way: s, or the driver stack
// it names (--image-opts, json:); with -s under a temporary overlay
// (imgopen.OpenTemp: the image itself opened read-only, never written);
// with -C copying what reads take from the backing chain into the image
// (imgopen.Opened.CopyOnRead; refused read-only).
func openIOImage(req ioOpenReq, s imgopen.Spec) (*imgopen.Opened, error) {
	ov := s // the overlay's own options
	if req.snapshot {
		s.ReadOnly = true
	}
	var img *imgopen.Opened
	var err error
	if req.spec {
		// A driver stack (qemu-io --image-opts / json:): the spec names
		// the formats, the -o engine options do not apply; -U does (its
		// host files' locks), and so does -f over a json: name's root
		// driver (QEMU's priority; --image-opts refuses -f, run).
		var format string
		if strings.HasPrefix(s.Path, "json:") {
			format = s.Format
		}
		img, err = imgopen.OpenSpec(s.Path, imgopen.Spec{Format: format, Cache: s.Cache, AIO: s.AIO, ReadOnly: s.ReadOnly, Secrets: s.Secrets,
			Opts: qcow2.Options{ForceShare: s.Opts.ForceShare, RepairLog: s.Opts.RepairLog}})
		if err != nil {
			err = &OpenError{Path: s.Path, Err: specFileError(err)} // in QEMU's words (qcow2.QemuText)
		}
	} else {
		img, err = openImage(s) // the secrets for its json: backing files' keys
	}
	if err != nil {
		return nil, err
	}
	if req.snapshot {
		base := "" // a stack stays open under the overlay
		if !req.spec {
			base, _ = protocol.Path(s.Path, false) // as openImage opened it
		}
		if img, err = imgopen.OpenTemp(ov, img, base); err != nil {
			return nil, &OpenError{Path: s.Path, Err: err}
		}
	}
	if req.copyOnRead {
		if err := img.CopyOnRead(ov.ReadOnly); err != nil {
			img.Close()
			return nil, &OpenError{Path: s.Path, Err: err}
		}
	}
	return img, nil
}

// ioSession runs qemu-io commands on one open image (or none, until
// open opens one: io_open.go).
type ioSession struct {
	*imgopen.Opened
	out    io.Writer
	errOut io.Writer // stderr: warnings
	path   string    // the image as named (a VMDK's info names its extents by it)
	quit   bool      // quit ran: the commands after it do not
	// secrets are the command line's --object secrets; imageOpts its
	// --image-opts (open's argument is an option string then).
	secrets   *secret.Store
	imageOpts bool
	// noUnmap is -d ignore: discard does nothing (QEMU's open without
	// BDRV_O_UNMAP).
	noUnmap bool
	// writethrough: Dev flushes each write (withCache); the writes
	// that bypass it flush themselves.
	writethrough bool
	// req is how the image open now was opened (reopen's starting
	// point).
	req ioOpenReq
}

// exec runs one qemu-io command line. The returned error is the one line
// to report; the qemu-io style output has gone to s.out.
func (s *ioSession) exec(line string) error {
	f := ioWords(line)
	if len(f) == 0 {
		return nil
	}
	typed, args := f[0], f[1:]
	name := typed
	if a, ok := ioAliases[typed]; ok {
		name = a
	}
	c, ok := ioCmds[name]
	if !ok {
		return &notFoundError{name: typed}
	}
	if s.Opened == nil && !ioGlobal[name] {
		return errNoFile
	}
	// qemu-io counts the options among the arguments.
	if len(args) < c.min || (c.max >= 0 && len(args) > c.max) {
		switch {
		case c.max < 0:
			return stderrError(fmt.Sprintf("bad argument count %d to %s, expected at least %d arguments", len(args), typed, c.min))
		case c.min == c.max:
			return stderrError(fmt.Sprintf("bad argument count %d to %s, expected %d arguments", len(args), typed, c.min))
		}
		return stderrError(fmt.Sprintf("bad argument count %d to %s, expected between %d and %d arguments", len(args), typed, c.min, c.max))
	}
	if ioWrites[name] && s.req.readOnly {
		return errReadOnlyCmd
	}
	if err := c.run(s, args); err != nil {
		return &cmdError{name: name, typed: typed, err: err}
	}
	return nil
}

// ioWrites are the commands that need to write (qemu-io's cmdinfo_t
// perm: BLK_PERM_WRITE, truncate's BLK_PERM_RESIZE too).
var ioWrites = map[string]bool{"write": true, "writev": true, "aio_write": true, "discard": true, "truncate": true}

// errReadOnlyCmd is such a command run on an image opened read-only
// (-r, open -r, reopen -r; with -s the overlay too): qemu-io's command()
// asks for the permission after the argument count and before the
// command parses its options, and reports the refusal with error_report,
// exit status 1, aio_write included (qimg parsed first, and reported
// aio_write's refusal as the request's, exit status 0).
var errReadOnlyCmd = &ioReport{"Block node is read-only"}

// ioWords splits a command line into its words as qemu-io's breakline
// does: at spaces only (qemu_strsep with " "), runs of them making no
// empty word; a tab is part of a word ("read\t0" is a command qemu-io
// does not have).
func ioWords(line string) []string {
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' })
}

// ioMaxRequest is the largest request qemu-io makes (QEMU's
// BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to 512).
const ioMaxRequest = 2147483136

// offLen parses the OFF LEN arguments and checks them against the size;
// a LEN over ioMaxRequest is refused with tooLong's error unless it is
// nil (write -z -n), as qemu-io refuses it.
func (s *ioSession) offLen(args []string, tooLong func(arg string) error) (int64, int64, error) {
	if len(args) != 2 {
		return 0, 0, &ioUsageError{}
	}
	off, err := ioNum(args[0])
	if err != nil {
		return 0, 0, err
	}
	n, err := ioNum(args[1])
	if err != nil {
		return 0, 0, err
	}
	if n > ioMaxRequest && tooLong != nil {
		return 0, 0, tooLong(args[1])
	}
	size, err := s.Dev.Size()
	if err != nil {
		return 0, 0, err
	}
	if off+n > size || off+n < off {
		return 0, 0, fmt.Errorf("request [%d, %d) is %w (%d bytes)", off, off+n, errPastEnd, size)
	}
	return off, n, nil
}

func parsePattern(s string) (byte, error) {
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < 0 || v > 255 {
		return 0, &patternError{arg: s}
	}
	return byte(v), nil
}

// report prints qemu-io's two result lines, or with -C its one
// machine-readable line (bytes, ops, time, bytes/s, ops/s); nothing with
// -q.
func (s *ioSession) report(o *opts, verb string, off, n int64, start time.Time) {
	if o.has("q") {
		return
	}
	d := time.Since(start).Seconds()
	if d <= 0 {
		d = 1e-9
	}
	if o.has("C") {
		// qemu-io's timestr with VERBOSE_FIXED_TIME: h:mm:ss.cc.
		secs := int64(d)
		ts := fmt.Sprintf("%d:%02d:%02d.%02d", secs/3600, secs%3600/60, secs%60, int64((d-float64(secs))*100))
		fmt.Fprintf(s.out, "%d,%d,%s,%.3f,%.3f\n", n, 1, ts, float64(n)/d, 1/d)
		return
	}
	fmt.Fprintf(s.out, "%s %d/%d bytes at offset %d\n", verb, n, n, off)
	fmt.Fprintf(s.out, "%s, 1 ops; %05.2f sec (%s/sec and %.4f ops/sec)\n", cvtstr(float64(n)), d, cvtstr(float64(n)/d), 1/d)
}

const ioChunk = 1 << 20

// request parses what read and write share: the -P pattern (def without
// it) and the OFF LEN arguments (tooLong: see offLen).
func (s *ioSession) request(o *opts, def byte, tooLong func(string) error) (pat byte, off, n int64, err error) {
	pat = def
	if o.has("P") {
		if pat, err = parsePattern(o.get("P", "")); err != nil {
			return 0, 0, 0, err
		}
	}
	off, n, err = s.offLen(o.args, tooLong)
	return pat, off, n, err
}

// lengthLimit is read's and discard's refusal of a length over
// ioMaxRequest, in qemu-io's words.
func lengthLimit(arg string) error {
	return fmt.Errorf("length cannot exceed %d, given %s", ioMaxRequest, arg)
}

// writeLengthLimit is write's: -z -n lifts the limit.
func writeLengthLimit(arg string) error {
	return fmt.Errorf("length cannot exceed %d without -n, given %s", ioMaxRequest, arg)
}

// eachChunk calls f on [off, off+n) in pieces of at most len(buf) bytes,
// each a prefix of buf, until f fails.
func eachChunk(off, n int64, buf []byte, f func(off int64, b []byte) error) error {
	for done := int64(0); done < n; done += int64(len(buf)) {
		if err := f(off+done, buf[:min(int64(len(buf)), n-done)]); err != nil {
			return err
		}
	}
	return nil
}

func (s *ioSession) write(args []string) error {
	return s.writeCmd(args, writeLengthLimit)
}

// writeCmd is write, its length limited by tooLong (see offLen; aio_write
// -z has none). -n is QEMU's BDRV_REQ_NO_FALLBACK: zeroes written
// efficiently or refused (block.NoFallback), never as written zeros. -f
// (FUA) flushes after the write; -s writes a file's bytes, repeated to
// the length; -p is ignored, as in qemu-io; -b (the VM state) is refused.
// The checks come in qemu-io's order.
func (s *ioSession) writeCmd(args []string, tooLong func(string) error) error {
	o, err := ioOpts(args, "bcCfnpP:qs:uz")
	if err != nil {
		return err
	}
	if o.has("P") {
		if _, err := parsePattern(o.get("P", "")); err != nil {
			return err
		}
	}
	if len(o.args) != 2 {
		return &ioUsageError{}
	}
	zero := o.has("z")
	switch {
	case o.has("b") && zero:
		return errors.New("-b and -z cannot be specified at the same time")
	case o.has("f") && (o.has("b") || o.has("c")):
		return errors.New("-f and -b or -c cannot be specified at the same time")
	case o.has("n") && !zero:
		return errors.New("-n requires -z to be specified")
	case o.has("u") && !zero:
		return errors.New("-u requires -z to be specified")
	case countTrue(zero, o.has("P"), o.has("s")) > 1:
		return errors.New("Only one of -z, -P, and -s can be specified at the same time")
	}
	if o.has("n") {
		tooLong = nil
	}
	pat, off, n, err := s.request(o, 0xcd, tooLong)
	if err != nil {
		return err
	}
	if o.has("b") || o.has("c") {
		for _, v := range []struct {
			name string
			n    int64
		}{{"offset", off}, {"count", n}} {
			if v.n%512 != 0 {
				return fmt.Errorf("%d is not a sector-aligned value for '%s'", v.n, v.name)
			}
		}
	}
	if o.has("b") {
		// The VM state: QEMU's raw has none either (ENOTSUP); its
		// qcow2 has, qring's has not.
		return fmt.Errorf("the VM state: %w", syscall.ENOTSUP)
	}
	var src []byte
	if o.has("s") {
		if src, err = sourceFile(o.get("s", ""), n); err != nil {
			return err
		}
	}
	start := time.Now()
	switch {
	case zero:
		var fl block.Flags
		if o.has("u") {
			fl |= block.MayUnmap
		}
		if o.has("n") {
			fl |= block.NoFallback
		}
		err = s.Dev.WriteZeroes(off, n, fl) // -c does not apply, as in qemu-io
	case o.has("c") && s.VMDK == nil:
		err = s.writeCompressed(off, n, pat, src)
	case o.has("c"):
		// QEMU's vmdk writes a compressed request as any other: its
		// extent compresses it or not (streamOptimized or not), as
		// qring's Writev does.
		b := src
		if b == nil {
			b = bytes.Repeat([]byte{pat}, int(n))
		}
		err = s.Dev.Writev(off, [][]byte{b})
	case src != nil:
		err = s.oneRequest(func(d block.Device) error {
			return eachChunk(off, n, src[:min(n, ioChunk)], func(at int64, b []byte) error {
				return d.Writev(at, [][]byte{src[at-off : at-off+int64(len(b))]})
			})
		})
	default:
		buf := bytes.Repeat([]byte{pat}, int(min(n, ioChunk)))
		err = s.oneRequest(func(d block.Device) error {
			return eachChunk(off, n, buf, func(off int64, b []byte) error {
				return d.Writev(off, [][]byte{b})
			})
		})
	}
	if err == nil && o.has("f") {
		err = s.Dev.Flush()
	}
	if err != nil {
		return err
	}
	s.report(o, "wrote", off, n, start)
	return nil
}

// oneRequest runs f, which writes one qemu-io request in pieces, on the
// device under the writethrough wrapper, and flushes once after it, as
// QEMU's block backend flushes once per request (each piece flushed
// made a 1 GiB write 1024 flushes).
func (s *ioSession) oneRequest(f func(d block.Device) error) error {
	d := s.Dev
	if w, ok := d.(writeThrough); ok {
		d = w.Device
	}
	if err := f(d); err != nil {
		return err
	}
	if s.writethrough {
		return d.Flush()
	}
	return nil
}

// countTrue is how many of bs are true.
func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// sourceFile is write -s's buffer: n bytes of the file at path, its
// contents repeated as often as it takes (qemu-io's
// qemu_io_alloc_from_file). A file that cannot be read, or is empty,
// is qemu-io's line on stderr.
func sourceFile(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, stderrError(path + ": " + strerror(err))
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(f, b)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, stderrError(path + ": " + strerror(err))
	}
	if k == 0 && n > 0 {
		return nil, stderrError(path + ": file is empty")
	}
	for i := k; i < len(b); i += k {
		copy(b[i:], b[:k])
	}
	return b, nil
}

// strerror is err's errno in strerror's words, or err's own.
func strerror(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return (&capitalized{err: en}).Error()
	}
	return err.Error()
}

// writeCompressed is write -c: each cluster of [off, off+n) written
// compressed (Image.WriteCompressed), as qemu-io's blk_pwrite_compressed
// does. The range must start on a cluster and end on one or at the end
// of the disk (EINVAL otherwise, before anything is written); a cluster
// that is allocated already fails the write (qemu: EIO). What else is
// written then is compressedAfterFailure's.
func (s *ioSession) writeCompressed(off, n int64, pat byte, src []byte) error {
	if s.Image == nil {
		return fmt.Errorf("compressed writes: %w", syscall.ENOTSUP)
	}
	size, err := s.Image.Size()
	if err != nil {
		return err
	}
	h := s.Image.Header()
	if h.IncompatibleFeatures&format.IncompatDataFile != 0 {
		// QEMU refuses them there before it looks at the range.
		return fmt.Errorf("compressed writes on an image with an external data file: %w", syscall.ENOTSUP)
	}
	cs := int64(h.ClusterSize())
	if off%cs != 0 || ((off+n)%cs != 0 && off+n != size) {
		return syscall.EINVAL
	}
	buf := bytes.Repeat([]byte{pat}, int(cs))
	var first error
	failed := int64(-1) // the index of the first cluster refused
	for i, o := int64(0), off; o < off+n; i, o = i+1, o+cs {
		if failed >= 0 && i > failed+compressedAfterFailure {
			break
		}
		if src != nil {
			buf = src[o-off:]
		}
		if err := s.Image.WriteCompressed(o, buf[:min(cs, off+n-o)]); err != nil && first == nil {
			first, failed = err, i
			if errors.Is(err, qcow2.ErrNotCompressible) {
				first = fmt.Errorf("%w (%v)", syscall.EIO, err)
			}
		}
	}
	if first != nil {
		return first
	}
	if s.writethrough {
		return s.Dev.Flush() // one request to qemu-io's block backend
	}
	return nil
}

// compressedAfterFailure is how many clusters after the first refused
// one a compressed write still writes. QEMU's qcow2 writes a
// multi-cluster compressed request as one task per cluster in a pool of
// QCOW2_MAX_WORKERS (8) tasks (qcow2_co_pwritev_compressed_part), and
// schedules no new task once one has failed (aio_task_pool_status < 0):
// the tasks in flight when the first fails finish (the 7 after it), and
// so does the one that was waiting for its slot. With the tasks finishing
// in order, that is the 8 clusters after the failed one: a request whose
// first cluster is refused writes clusters 1 to 8, as qemu-io does
// (deterministically there; later failures depend on QEMU's timing).
const compressedAfterFailure = 8

// errPattern is a failed read -P verification.
var errPattern = errors.New("pattern verification failed")

func (s *ioSession) read(args []string) error {
	o, err := ioOpts(args, "bCl:pP:qs:v")
	if err != nil {
		return err
	}
	// Parsed in their order, as qemu-io's getopt loop parses them,
	// before the rest.
	var vOff, vLen int64 = 0, -1
	for _, kv := range o.order {
		switch kv[0] {
		case "P":
			_, err = parsePattern(kv[1])
		case "l":
			vLen, err = ioNum(kv[1])
		case "s":
			vOff, err = ioNum(kv[1])
		}
		if err != nil {
			return err
		}
	}
	if len(o.args) != 2 {
		return &ioUsageError{}
	}
	pat, off, n, err := s.request(o, 0, lengthLimit)
	if err != nil {
		return err
	}
	check := o.has("P")
	if !check && (o.has("l") || o.has("s")) {
		return &ioUsageError{}
	}
	// -s and -l: the part of the read -P verifies (all of it by
	// default, from -s to the end without -l).
	if vLen < 0 {
		vLen = n - vOff
	}
	if vLen < 0 || vOff+vLen > n || vOff+vLen < vOff {
		return errors.New("pattern verification range exceeds end of read data")
	}
	if o.has("b") {
		return fmt.Errorf("the VM state: %w", syscall.ENOTSUP) // as write -b
	}
	start := time.Now()
	mismatch := false
	var dump []byte
	err = eachChunk(off, n, make([]byte, min(n, ioChunk)), func(at int64, b []byte) error {
		if err := s.Dev.Readv(at, [][]byte{b}); err != nil {
			return err
		}
		if check && !mismatch {
			// The part of b inside [off+vOff, off+vOff+vLen).
			lo, hi := max(at, off+vOff), min(at+int64(len(b)), off+vOff+vLen)
			for _, c := range b[max(0, lo-at):max(0, hi-at)] {
				if c != pat {
					mismatch = true
					break
				}
			}
		}
		if o.has("v") {
			dump = append(dump, b...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.readDone(o, off+vOff, vLen, off, n, dump, mismatch, start)
}

// readDone ends read and readv, as qemu-io's do: it reports a failed -P
// verification of the vLen bytes at vOff, dumps the n bytes read at off
// under -v and prints the timing, both unless -q, and returns errPattern
// on a mismatch.
func (s *ioSession) readDone(o *opts, vOff, vLen, off, n int64, data []byte, mismatch bool, start time.Time) error {
	if mismatch {
		fmt.Fprintf(s.out, "Pattern verification failed at offset %d, %d bytes\n", vOff, vLen)
	}
	if o.has("v") && !o.has("q") {
		hexDump(s.out, data, off) // qemu-io's -q skips the dump too
	}
	s.report(o, "read", off, n, start)
	if mismatch {
		return fmt.Errorf("%w at offset %d, %d bytes", errPattern, vOff, vLen)
	}
	return nil
}

// hexDump is qemu-io's dump_buffer.
func hexDump(w io.Writer, b []byte, off int64) {
	for i := 0; i < len(b); i += 16 {
		line := b[i:min(i+16, len(b))]
		var sb strings.Builder
		fmt.Fprintf(&sb, "%08x:  ", off+int64(i))
		for _, c := range line {
			fmt.Fprintf(&sb, "%02x ", c)
		}
		sb.WriteByte(' ')
		for _, c := range line {
			if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				sb.WriteByte(c)
			} else {
				sb.WriteByte('.')
			}
		}
		fmt.Fprintln(w, sb.String())
	}
}

func (s *ioSession) discard(args []string) error {
	o, err := ioOpts(args, "Cq")
	if err != nil {
		return err
	}
	off, n, err := s.offLen(o.args, lengthLimit)
	if err != nil {
		return err
	}
	start := time.Now()
	switch {
	case s.noUnmap:
		// -d ignore: QEMU's block layer drops the request.
	case s.Image != nil:
		err = s.Image.Discard(off, n)
	case s.VHD != nil:
		err = s.VHD.Discard(off, n) // QEMU's vpc: the bytes stay
	case s.VMDK != nil:
		err = s.VMDK.Discard(off, n) // QEMU's vmdk: the bytes stay
	case s.LUKS != nil:
		err = s.LUKS.Discard(off, n) // QEMU's crypto driver: nothing (LV3)
	case imgopen.CORImage(s.Dev) != nil:
		err = s.Dev.(block.Discarder).Discard(off, n) // to the image under it
	default:
		err = s.Dev.WriteZeroes(off, n, block.MayUnmap)
	}
	if err != nil {
		return err
	}
	s.report(o, "discard", off, n, start)
	return nil
}

// mapCmd is qemu-io's map: the runs this image allocates and does not
// (bdrv_is_allocated: a range only a backing file holds is not
// allocated here).
func (s *ioSession) mapCmd() error {
	ext, err := s.extents()
	if err != nil {
		return err
	}
	for i := 0; i < len(ext); {
		j, n := i, int64(0)
		for ; j < len(ext) && here(ext[j]) == here(ext[i]); j++ {
			n += ext[j].Length
		}
		state := "not"
		if here(ext[i]) {
			state = "   "
		}
		fmt.Fprintf(s.out, "%s (0x%x) bytes %s allocated at offset %s (0x%x)\n",
			cvtstr(float64(n)), n, state, cvtstr(float64(ext[i].Start)), ext[i].Start)
		i = j
	}
	return nil
}

// here reports whether e is allocated in the top layer itself
// (bdrv_is_allocated), not only in a backing file.
func here(e qcow2.MapEntry) bool { return e.Present && e.Depth == 0 }

// node is the session's device without qimg's writethrough wrapper
// (withCache): the driver stack as opened, whose type says where its
// status comes from (a raw node over a qcow2 one: imgopen.RawStack).
func (s *ioSession) node() block.Device {
	d := s.Dev
	for {
		w, ok := d.(imgopen.CacheModeWrapper)
		if !ok {
			return d
		}
		d = w.CacheModeWrapped()
	}
}

// extents is mapExtents of the image as opened: with the writethrough
// wrapper in front of it, a raw node over qcow2 looked like a plain
// device, all of it allocated (qemu-io's map said 128 KiB allocated
// where qimg said 4 MiB).
func (s *ioSession) extents() ([]qcow2.MapEntry, error) {
	o := *s.Opened
	o.Dev = s.node()
	return mapExtents(&o)
}

// info is qemu-io's info command.
func (s *ioSession) info() error {
	im := s.Image
	if c := imgopen.CORImage(s.Dev); im == nil && c != nil {
		// A copy-on-read root: its name, its image's cluster size and
		// VM state offset, no format specific information.
		g := c.Geometry()
		fmt.Fprintln(s.out, "format name: copy-on-read")
		fmt.Fprintf(s.out, "cluster size: %s\n", cvtstr(float64(g.ClusterSize)))
		fmt.Fprintf(s.out, "vm state offset: %s\n", cvtstr(float64(g.L1EntriesFor(c.Header().Size)*g.ClusterSize*g.L2Entries)))
		return nil
	}
	if im == nil {
		// Raw, vpc, vmdk, luks: the driver's cluster size (vpc: its
		// block size; none for raw and luks), no VM state.
		inf := &imageInfo{}
		switch {
		case s.VHD != nil:
			inf.ClusterSize = s.VHD.BlockSize()
		case s.VMDK != nil:
			vmdkInfo(inf, s.path, s.VMDK)
		case s.LUKS != nil:
			li := newLUKSInfo(s.LUKS.Header())
			li.Format = ""
			inf.FormatSpecific = &formatSpecific{Type: "luks", LUKS: li}
		}
		fmt.Fprintf(s.out, "format name: %s\n", s.Format())
		if s.VHD == nil && s.VMDK == nil && onExport(s.Dev) {
			// Raw or LUKS over an export: their get_info asks the
			// file node, QEMU's nbd driver has none, and qemu-io's
			// info stops at the name and fails (ENOTSUP).
			return errReported
		}
		fmt.Fprintf(s.out, "cluster size: %s\n", cvtstr(float64(inf.ClusterSize)))
		fmt.Fprintln(s.out, "vm state offset: 0 bytes")
		if v := inf.FormatSpecific; v != nil && v.VMDK != nil {
			fmt.Fprintln(s.out, "Format specific information:")
			writeVMDKHuman(s.out, v.VMDK, "    ")
		}
		if v := inf.FormatSpecific; v != nil && v.LUKS != nil {
			fmt.Fprintln(s.out, "Format specific information:")
			writeLUKSFields(s.out, v.LUKS, "    ")
		}
		return nil
	}
	h := im.Header()
	g := im.Geometry()
	fmt.Fprintln(s.out, "format name: qcow2")
	fmt.Fprintf(s.out, "cluster size: %s\n", cvtstr(float64(g.ClusterSize)))
	vmState := g.L1EntriesFor(h.Size) * g.ClusterSize * g.L2Entries
	fmt.Fprintf(s.out, "vm state offset: %s\n", cvtstr(float64(vmState)))
	fmt.Fprintln(s.out, "Format specific information:")
	writeSpecificHuman(s.out, qcow2Specific(h), "    ")
	return nil
}
