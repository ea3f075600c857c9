package main

import (
	"bytes"
	"errors"
	"fmt"
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
	"discard [-Cq] off len -- discards a number of bytes at a specified offset",
	"flush -- flush all in-core file state to disk",
	"help [command] -- help for one or all commands",
	"info -- prints information about the current file",
	"length -- gets the length of the current file",
	"map  -- prints the allocated areas of a file",
	"read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset",
	"readv [-Cqv] [-P pattern] off len [len..] -- reads a number of bytes at a specified offset",
	"sleep -- waits for the given value in milliseconds",
	"truncate [-m prealloc_mode] off -- truncates the current file at the given offset",
	"write [-bcCfnquz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset",
	"writev [-Cfq] [-P pattern] off len [len..] -- writes a number of bytes at a specified offset",
}

var ioCmds map[string]ioCmd

func init() {
	ioCmds = map[string]ioCmd{
		"readv":     {(*ioSession).readv, 2, -1},
		"writev":    {(*ioSession).writev, 2, -1},
		"aio_read":  {(*ioSession).readv, 2, -1},
		"aio_write": {(*ioSession).aioWrite, 2, -1},
		"aio_flush": {func(*ioSession, []string) error { return nil }, 0, 0},
		"length":    {(*ioSession).length, 0, 0},
		"alloc":     {(*ioSession).alloc, 1, 2},
		"truncate":  {(*ioSession).truncate, 1, 3},
		"sleep":     {(*ioSession).sleep, 1, 1},
		"help":      {(*ioSession).help, 0, 1},
	}
}

// execMore runs the commands of this file; ok is false for an unknown
// command. qimg runs aio_read and aio_write to completion before the
// next command, so aio_flush has nothing left to wait for (qemu-io's
// aio_flush waits for the outstanding requests; there are none).
func (s *ioSession) execMore(name string, args []string) (ok bool, err error) {
	c, ok := ioCmds[name]
	if !ok {
		return false, nil
	}
	if len(args) < c.min || (c.max >= 0 && len(args) > c.max) {
		switch {
		case c.max < 0:
			return true, argCountError(fmt.Sprintf("bad argument count %d to %s, expected at least %d arguments", len(args), name, c.min))
		case c.min == c.max:
			return true, argCountError(fmt.Sprintf("bad argument count %d to %s, expected %d arguments", len(args), name, c.min))
		}
		return true, argCountError(fmt.Sprintf("bad argument count %d to %s, expected between %d and %d arguments", len(args), name, c.min, c.max))
	}
	return true, c.run(s, args)
}

// vecArgs parses OFF LEN [LEN...] and checks the total against the size.
func (s *ioSession) vecArgs(args []string) (off int64, lens []int64, total int64, err error) {
	if len(args) < 2 {
		return 0, nil, 0, fmt.Errorf("expected OFFSET LENGTH [LENGTH...], got %d arguments", len(args))
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
	o, err := getopt(args, shorts)
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
func (s *ioSession) readv(args []string) error {
	o, err := cmdOpts(args, "P:vqCi", "C", "i")
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
	return s.readDone(o, off, total, all, mismatch, start)
}

// writev is qemu-io's writev: one vectored write of the -P pattern
// (0xcd by default).
func (s *ioSession) writev(args []string) error {
	o, err := cmdOpts(args, "P:qCf", "C", "f")
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
	if err := s.Dev.Writev(off, bufs); err != nil {
		return err
	}
	if !o.has("q") {
		s.report("wrote", off, total, start)
	}
	return nil
}

// aioWrite is qemu-io's aio_write, completed at once; -z writes zeros
// (as write -z, with -u to unmap).
func (s *ioSession) aioWrite(args []string) error {
	o, err := cmdOpts(args, "P:qCfiuz", "C", "f", "i")
	if err != nil {
		return err
	}
	if o.has("z") {
		if o.has("P") {
			return errors.New("-z and -P cannot be specified at the same time")
		}
		if len(o.args) != 2 {
			return errors.New("-z supports only a single length parameter")
		}
		wargs := []string{"-z"}
		if o.has("u") {
			wargs = append(wargs, "-u")
		}
		if o.has("q") {
			wargs = append(wargs, "-q")
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
	o, err := getopt(args, "m:")
	if err != nil {
		return err
	}
	if m := o.get("m", "off"); m != "off" {
		return fmt.Errorf("preallocation mode '%s' is not supported", m)
	}
	if len(o.args) != 1 {
		return fmt.Errorf("expected one offset, got %d arguments", len(o.args))
	}
	size, err := ioNum(o.args[0])
	if err != nil {
		return err
	}
	if s.Image == nil {
		if size > qemuMaxLength {
			return errExceedsMax(size)
		}
		if err := s.Dev.Truncate(size); err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				err = &capitalized{err: errno}
			}
			return fmt.Errorf("Could not resize file: %w", err)
		}
		return nil
	}
	cur, err := s.Image.Size()
	if err != nil {
		return err
	}
	return resizeQcow2(s.Image, cur, size, "off")
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
