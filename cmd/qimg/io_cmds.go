package main

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/qring/qring/block"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ioCmd is one of the qemu-io commands of this file and its argument
// bounds (max -1: any number), checked as qemu-io checks them.
type ioCmd struct {
	run      func(s *ioSession, args []string) error
	min, max int
}

// ioHelp is qemu-io's help listing, restricted to the commands qimg io
// runs (io.go's and this file's), in qemu-io's order.
var ioHelp = []string{
	"aio_flush -- completes all outstanding aio requests",
	"aio_read [-Ciqv] [-P pattern] off len [len..] -- asynchronously reads a number of bytes",
	"aio_write [-Cfiquz] [-P pattern] off len [len..] -- asynchronously writes a number of bytes",
	"alloc offset [count] -- checks if offset is allocated in the file",
	"close -- close the current open file",
	"discard [-Cq] off len -- discards a number of bytes at a specified offset",
	"flush -- flush all in-core file state to disk",
	"help [command] -- help for one or all commands",
	"info -- prints information about the current file",
	"length -- gets the length of the current file",
	"map  -- prints the allocated areas of a file",
	"open [-rsCnkU] [-t cache] [-d discard] [-o options] [path] -- open the file specified by path",
	"quit -- exit the program",
	"read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset",
	"readv [-Cqv] [-P pattern] off len [len..] -- reads a number of bytes at a specified offset",
	"reopen [(-r|-w)] [-c cache] [-o options] -- reopens an image with new options",
	"sleep -- waits for the given value in milliseconds",
	"truncate [-m prealloc_mode] off -- truncates the current file at the given offset",
	"write [-bcCfnquz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset",
	"writev [-Cfq] [-P pattern] off len [len..] -- writes a number of bytes at a specified offset",
}

var ioCmds map[string]ioCmd

// ioAliases are qemu-io's one-letter names (its altname) of the commands
// qimg io runs.
var ioAliases = map[string]string{"a": "alloc", "c": "close", "d": "discard", "f": "flush", "i": "info", "l": "length",
	"o": "open", "q": "quit", "r": "read", "t": "truncate", "w": "write", "?": "help"}

func init() {
	ioCmds = map[string]ioCmd{
		"read":      {(*ioSession).read, 2, -1},
		"write":     {(*ioSession).write, 2, -1},
		"discard":   {(*ioSession).discard, 2, -1},
		"flush":     {func(s *ioSession, _ []string) error { return s.Dev.Flush() }, 0, 0},
		"map":       {func(s *ioSession, _ []string) error { return s.mapCmd() }, 0, 0},
		"info":      {func(s *ioSession, _ []string) error { return s.info() }, 0, 0},
		"readv":     {func(s *ioSession, a []string) error { return s.readv(a, "CP:qv") }, 2, -1},
		"writev":    {(*ioSession).writev, 2, -1},
		"aio_read":  {func(s *ioSession, a []string) error { return s.readv(a, "CiP:qv", "i") }, 2, -1},
		"aio_write": {(*ioSession).aioWrite, 2, -1},
		// qimg runs aio_read and aio_write to completion before the
		// next command: aio_flush has nothing left to wait for.
		"aio_flush": {func(*ioSession, []string) error { return nil }, 0, 0},
		"length":    {(*ioSession).length, 0, 0},
		"alloc":     {(*ioSession).alloc, 1, 2},
		"truncate":  {(*ioSession).truncate, 1, 3},
		"sleep":     {(*ioSession).sleep, 1, 1},
		"help":      {(*ioSession).help, 0, 1},
		"open":      {(*ioSession).openCmd, 1, -1},
		"close":     {(*ioSession).closeCmd, 0, 0},
		"reopen":    {(*ioSession).reopenCmd, 0, -1},
		// qemu-io quits whatever follows the word.
		"quit": {func(s *ioSession, _ []string) error { s.quit = true; return nil }, 0, -1},
	}
}

// vecArgs parses OFF LEN [LEN...] and checks the total against the size.
func (s *ioSession) vecArgs(args []string) (off int64, lens []int64, total int64, err error) {
	if len(args) < 2 {
		return 0, nil, 0, &ioUsageError{}
	}
	if off, err = ioNum(args[0]); err != nil {
		return 0, nil, 0, err
	}
	for _, a := range args[1:] {
		n, err := ioNum(a)
		if err != nil {
			return 0, nil, 0, err
		}
		// qemu-io's create_iovec: each length, then the running total,
		// within its largest request.
		if n > ioMaxRequest {
			return 0, nil, 0, fmt.Errorf("Argument '%s' exceeds maximum size %d", a, ioMaxRequest)
		}
		if total > ioMaxRequest-n {
			return 0, nil, 0, fmt.Errorf("The total number of bytes exceed the maximum size %d", ioMaxRequest)
		}
		lens = append(lens, n)
		total += n
	}
	// offLen checks the range as read and write do.
	if _, _, err := s.offLen([]string{strconv.FormatInt(off, 10), strconv.FormatInt(total, 10)}, nil); err != nil {
		return 0, nil, 0, err
	}
	return off, lens, total, nil
}

// patternArg is the -P byte (def without it). qemu-io's readv, writev,
// aio_read and aio_write parse it in their getopt loop, before they look
// at their arguments: "x is not a valid pattern byte" comes before a
// range past the end (qimg said "readv failed: Input/output error").
func patternArg(o *opts, def byte) (byte, error) {
	if !o.has("P") {
		return def, nil
	}
	return parsePattern(o.get("P", ""))
}

// vecBufs allocates one buffer per length, filled with pat.
func vecBufs(lens []int64, pat byte) [][]byte {
	bufs := make([][]byte, len(lens))
	for i, n := range lens {
		bufs[i] = bytes.Repeat([]byte{pat}, int(n))
	}
	return bufs
}

// cmdOpts parses an io command's options (getopt with shorts) and
// refuses those qemu-io has and qring does not support: each of
// unsupported is a flag letter, perhaps followed by a note for the
// message ("c (compressed)").
func cmdOpts(args []string, shorts string, unsupported ...string) (*opts, error) {
	o, err := ioOpts(args, shorts)
	if err != nil {
		return nil, err
	}
	for _, u := range unsupported {
		if o.has(u[:1]) {
			names := make([]string, len(unsupported))
			for i, n := range unsupported {
				names[i] = "-" + n
			}
			last := len(names) - 1
			if last == 0 {
				return nil, fmt.Errorf("%s is not supported", names[0])
			}
			return nil, fmt.Errorf("%s and %s are not supported", strings.Join(names[:last], ", "), names[last])
		}
	}
	return o, nil
}

// readv is qemu-io's readv (and aio_read, completed at once): one
// vectored read, -P verifies every byte, -v dumps.
func (s *ioSession) readv(args []string, shorts string, unsupported ...string) error {
	o, err := cmdOpts(args, shorts, unsupported...)
	if err != nil {
		return err
	}
	pat, err := patternArg(o, 0)
	if err != nil {
		return err
	}
	check := o.has("P")
	off, lens, total, err := s.vecArgs(o.args)
	if err != nil {
		return err
	}
	bufs := vecBufs(lens, 0)
	start := time.Now()
	if err := s.Dev.Readv(off, bufs); err != nil {
		return err
	}
	all := bytes.Join(bufs, nil)
	mismatch := check && bytes.Count(all, []byte{pat}) != len(all)
	return s.readDone(o, off, total, off, total, all, mismatch, start)
}

// writev is qemu-io's writev: one vectored write of the -P pattern
// (0xcd by default).
func (s *ioSession) writev(args []string) error {
	o, err := cmdOpts(args, "CfP:q")
	if err != nil {
		return err
	}
	return s.vecWrite(o)
}

func (s *ioSession) vecWrite(o *opts) error {
	pat, err := patternArg(o, 0xcd)
	if err != nil {
		return err
	}
	off, lens, total, err := s.vecArgs(o.args)
	if err != nil {
		return err
	}
	bufs := vecBufs(lens, pat)
	start := time.Now()
	err = s.Dev.Writev(off, bufs)
	if err == nil && o.has("f") {
		err = s.Dev.Flush() // FUA
	}
	if err != nil {
		return err
	}
	s.report(o, "wrote", off, total, start)
	return nil
}

// aioWrite is qemu-io's aio_write, completed at once; -z writes zeros
// (as write -z, with -u to unmap).
func (s *ioSession) aioWrite(args []string) error {
	o, err := cmdOpts(args, "CfiP:quz", "i")
	if err != nil {
		return err
	}
	if _, err := patternArg(o, 0); err != nil {
		return err // in its getopt loop, with -z too
	}
	if len(o.args) < 2 {
		return &ioUsageError{}
	}
	if o.has("z") {
		// -P with -z is not refused (qemu-io 7.2's aio_write checks
		// a flag its -P never sets): the zeros win.
		if len(o.args) != 2 {
			return errors.New("-z supports only a single length parameter")
		}
		wargs := []string{"-z"}
		for _, f := range []string{"u", "q", "C", "f"} {
			if o.has(f) {
				wargs = append(wargs, "-"+f)
			}
		}
		return s.writeCmd(append(wargs, o.args...), nil) // qemu-io's aio_write -z has no limit
	}
	if o.has("u") {
		return errors.New("-u requires -z to be specified")
	}
	return s.vecWrite(o)
}

// length prints the virtual size as qemu-io does ("4 MiB").
func (s *ioSession) length([]string) error {
	size, err := s.Dev.Size()
	if err != nil {
		return err
	}
	fmt.Fprintln(s.out, cvtstr(float64(size)))
	return nil
}

// alloc is qemu-io's alloc: how many of count bytes (512 by default,
// clamped to the end of the image as qemu-io 7.2 does) from offset this
// layer allocates (bdrv_is_allocated, as map: see allocated).
func (s *ioSession) alloc(args []string) error {
	off, err := ioNum(args[0])
	if err != nil {
		return err
	}
	count := int64(512)
	if len(args) == 2 {
		if count, err = ioNum(args[1]); err != nil {
			return err
		}
	}
	size, err := s.Dev.Size()
	if err != nil {
		return err
	}
	count = max(0, min(count, size-off))
	sum, err := s.allocated(off, count)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.out, "%d/%d bytes allocated at offset %s\n", sum, count, cvtstr(float64(off)))
	return nil
}

// allocated is how many bytes of [off, off+n) the top layer allocates,
// as QEMU's bdrv_is_allocated answers qemu-io's alloc and map: a qcow2
// image's data or zero clusters (its block status), else the runs map
// finds here (ioSession.here): a VMDK's grains, a raw node's child's own
// status (raw over qcow2: its clusters), all of a raw file or a vpc
// image as QEMU's drivers report them. qimg counted all of a non-qcow2
// image as allocated.
func (s *ioSession) allocated(off, n int64) (int64, error) {
	var sum int64
	if s.Image != nil {
		for p := off; p < off+n; {
			st, err := s.Image.BlockStatus(p, off+n-p)
			if err != nil {
				return 0, err
			}
			k := min(off+n-p, st.Off+st.Len-p)
			if st.Allocated {
				sum += k
			}
			p += k
		}
		return sum, nil
	}
	ext, err := s.extents()
	if err != nil {
		return 0, err
	}
	for _, e := range ext {
		if lo, hi := max(off, e.Start), min(off+n, e.Start+e.Length); hi > lo && here(e) {
			sum += hi - lo
		}
	}
	return sum, nil
}

// truncate is qemu-io's truncate: the virtual size becomes off, growing
// or shrinking (qcow2: as qimg resize --shrink does).
func (s *ioSession) truncate(args []string) error {
	o, err := ioOpts(args, "m:")
	if err != nil {
		return err
	}
	m := o.get("m", "off")
	switch m {
	case "off", "metadata", "falloc", "full":
	default:
		return fmt.Errorf("Invalid preallocation mode '%s'", m)
	}
	if len(o.args) < 1 {
		// qemu-io 7.2 reads past its arguments here (and crashes);
		// the usage says what is missing. Words past the offset
		// are left, as qemu-io leaves them.
		return &ioUsageError{}
	}
	size, err := ioNum(o.args[0])
	if err != nil {
		return truncateParseError(err, args)
	}
	if s.VHD != nil || s.VMDK != nil {
		// QEMU's block layer, before any driver's own checks.
		return errors.New("Image format driver does not support resize")
	}
	cur, err := s.Dev.Size()
	if err != nil {
		return err
	}
	if s.Image == nil && s.RawFixed {
		// QEMU's raw driver, before its file node sees the size.
		return errors.New("Cannot resize fixed-size raw disks")
	}
	if s.Image == nil && onExport(s.Dev) {
		// QEMU's nbd driver under qemu-io's inexact truncate: a shrink
		// is taken as done (the export keeps its size), whatever the
		// preallocation; growing is refused.
		switch {
		case size > qemuMaxLength:
			return errExceedsMax(size)
		case size > cur:
			return errors.New("Cannot grow NBD nodes")
		}
		return nil
	}
	if s.Image == nil {
		// Raw, and the file under a LUKS volume: QEMU's file driver's
		// refusals and preallocation.
		switch {
		case m == "metadata":
			return errors.New("Unsupported preallocation mode: metadata")
		case size < cur && m != "off":
			return errors.New("Cannot use preallocation for shrinking files")
		}
		if size > qemuMaxLength {
			return errExceedsMax(size)
		}
		if l := s.LUKS; l != nil {
			// QEMU's crypto driver: the file only, grown space the
			// file's zeros, decrypted (LV6).
			if err := l.ResizeFile(size); err != nil {
				return fmt.Errorf("Could not resize file: %w", err)
			}
			return preallocOn(l.File(), l.PayloadOffset()+cur, l.PayloadOffset()+size, m)
		}
		if err := s.Dev.Truncate(size); err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				err = &capitalized{err: errno}
			}
			return fmt.Errorf("Could not resize file: %w", err)
		}
		return s.oneRequest(func(d block.Device) error { return preallocOn(d, cur, size, m) })
	}
	if size < cur && m != "off" {
		return errors.New("Preallocation can't be used for shrinking an image")
	}
	return resizeQcow2(s.Image, cur, size, m)
}

// truncateParseError is truncate's unreadable size as qemu-io 7.2 says
// it: print_cvtnum_err on stdout (io_errors.go), naming argv[1] rather
// than the size, after glibc's getopt has moved the options to the
// front: the first option's word when there is one ("truncate -m off
// x" names -m), else the size.
func truncateParseError(err error, args []string) error {
	var pe *parseError
	if !errors.As(err, &pe) {
		return err
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if len(a) > 1 && a[0] == '-' {
			return &parseError{arg: a, tooLarge: pe.tooLarge}
		}
	}
	return pe
}

// preallocOn allocates what truncate -m falloc or full added to a raw
// image or a LUKS volume's file, [cur, size) of dev: falloc as zeros the
// file system allocates (block.Allocate), full as zeros written.
func preallocOn(dev block.Device, cur, size int64, mode string) error {
	if size <= cur || mode == "off" {
		return nil
	}
	if mode == "falloc" {
		if err := dev.WriteZeroes(cur, size-cur, block.Allocate); err != nil {
			return fmt.Errorf("Could not preallocate new data: %w", err)
		}
		return nil
	}
	return eachChunk(cur, size-cur, make([]byte, min(size-cur, ioChunk)), func(off int64, b []byte) error {
		if err := dev.Writev(off, [][]byte{b}); err != nil {
			return fmt.Errorf("Could not write zeros for preallocation: %w", err)
		}
		return nil
	})
}

// sleep waits for the given number of milliseconds, read as qemu-io's
// sleep_f reads them: strtol in base 0 (0x10 is 16, 010 is 8), the whole
// word a number, not negative. QEMU arms a timer at now + ms * 10^6 ns,
// in int64: a number so large that this wraps (strtol clamps an overflow
// to LONG_MAX) lands in the past and does not wait at all.
func (s *ioSession) sleep(args []string) error {
	ms, ok := strtol0(args[0])
	if !ok || ms < 0 {
		return fmt.Errorf("%s is not a valid number", args[0]) // on stdout, as qemu-io (io_errors.go)
	}
	now := time.Now().UnixNano()
	if at := now + ms*int64(time.Millisecond); at > now {
		time.Sleep(time.Duration(at - now))
	}
	return nil
}

// strtol0 is C's strtol(s, &end, 0) with *end required to be '\0': leading
// white space, a sign, then 0x/0X hex, 0 octal or decimal digits; an
// overflow clamps to the int64 limit (glibc's LONG_MAX/LONG_MIN). ok is
// false if anything is left after the number (or there is none).
func strtol0(s string) (v int64, ok bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg, s = s[0] == '-', s[1:]
	}
	base := uint64(10)
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digitVal(s[2]) < 16:
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base = 8
	}
	if s == "" {
		return 0, false
	}
	var u uint64
	over := false
	for i := 0; i < len(s); i++ {
		d := uint64(digitVal(s[i]))
		if d >= base {
			return 0, false
		}
		if u > (math.MaxUint64-d)/base {
			over = true
		} else {
			u = u*base + d
		}
	}
	switch {
	case neg && (over || u > 1<<63):
		return math.MinInt64, true
	case neg:
		return -int64(u), true
	case over || u > math.MaxInt64:
		return math.MaxInt64, true
	}
	return int64(u), true
}

// digitVal is c's value as a digit in bases up to 36 (36 for none).
func digitVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 36
}

// help prints the command list, or one command's line.
func (s *ioSession) help(args []string) error {
	if len(args) == 0 {
		for _, l := range ioHelp {
			fmt.Fprintln(s.out, l)
		}
		fmt.Fprint(s.out, "\nUse 'help commandname' for extended help.\n")
		return nil
	}
	name := args[0]
	for _, l := range ioHelp {
		if n, _, _ := strings.Cut(l, " "); n == name {
			fmt.Fprintln(s.out, l)
			return nil
		}
	}
	fmt.Fprintf(s.out, "command %s not found\n", name) // on stdout, as qemu-io
	return errReported
}
