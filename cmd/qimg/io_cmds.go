package main

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/qring/qring/block"
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
	off, lens, total, err := s.vecArgs(o.args)
	if err != nil {
		return err
	}
	pat, check := byte(0), o.has("P")
	if check {
		if pat, err = parsePattern(o.get("P", "")); err != nil {
			return err
		}
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
	off, lens, total, err := s.vecArgs(o.args)
	if err != nil {
		return err
	}
	pat := byte(0xcd)
	if o.has("P") {
		if pat, err = parsePattern(o.get("P", "")); err != nil {
			return err
		}
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
// layer allocates (data or zero clusters; a raw file allocates all of
// itself).
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
	var sum int64
	for p := off; p < off+count; {
		n := off + count - p
		if s.Image != nil {
			st, err := s.Image.BlockStatus(p, n)
			if err != nil {
				return err
			}
			n = min(n, st.Off+st.Len-p)
			if st.Allocated {
				sum += n
			}
		} else {
			sum += n
		}
		p += n
	}
	fmt.Fprintf(s.out, "%d/%d bytes allocated at offset %s\n", sum, count, cvtstr(float64(off)))
	return nil
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
		return err
	}
	if s.VHD != nil || s.VMDK != nil {
		// QEMU's block layer, before any driver's own checks.
		return errors.New("Image format driver does not support resize")
	}
	cur, err := s.Dev.Size()
	if err != nil {
		return err
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

// sleep waits for the given number of milliseconds.
func (s *ioSession) sleep(args []string) error {
	ms, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || ms < 0 {
		return fmt.Errorf("%s is not a valid number", args[0]) // on stdout, as qemu-io (io_errors.go)
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return nil
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
