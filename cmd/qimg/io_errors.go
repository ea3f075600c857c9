package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vmdk"
)

// How qimg io reports a command that failed: as qemu-io does, so that
// scripts reading qemu-io's output read qimg's. qemu-io prints on stdout,
// with no program name: "read failed: Input/output error" for a request
// the block layer refused (a range past the end is EIO there), "Parsing
// error: ..." for a number it cannot read, "300 is not a valid pattern
// byte", its own usage complaints as they are; on stderr `command "x"
// not found` and wrong argument counts as they are, and, with its
// "qemu-io: " (qimg's "qimg: io: "), a write to a read-only image and a
// failed truncate. A pattern mismatch prints its line with the read's
// result and nothing more. The exit code is 1 either way. Errors the
// engine words itself (no errno under them) keep their words after
// "CMD failed: ".

// cmdError is a qemu-io command that failed: name is the command's, typed
// the word that called it (an alias: "r").
type cmdError struct {
	name, typed string
	err         error
}

func (e *cmdError) Error() string { return e.name + ": " + e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

// notFoundError is a command qemu-io does not have.
type notFoundError struct{ name string }

// Error is qemu-io's line: the name as typed, in quotes, not escaped
// (a tab stays a tab).
func (e *notFoundError) Error() string { return `command "` + e.name + `" not found` }

// stderrError is a line qemu-io prints on stderr as it is, without its
// prefix: a command given too few or too many arguments, write -s's
// unreadable source file.
type stderrError string

func (e stderrError) Error() string { return string(e) }

// ioUsageError is a command line qemu-io answers with the command's usage
// line on stdout: after glibc getopt's complaint on stderr for a refused
// option (opt), or alone for a wrong number of arguments after the
// options.
type ioUsageError struct{ opt *optError }

func (e *ioUsageError) Error() string {
	if e.opt != nil {
		return e.opt.Error()
	}
	return "wrong number of arguments"
}

// ioOpts is getopt for an io command; a refused option is a ioUsageError.
func ioOpts(args []string, shorts string) (*opts, error) {
	o, err := getopt(args, shorts)
	var oe *optError
	if errors.As(err, &oe) {
		return nil, &ioUsageError{opt: oe}
	}
	return o, err
}

// usageLine is the command's line of ioHelp.
func usageLine(name string) string {
	for _, l := range ioHelp {
		if n, _, _ := strings.Cut(l, " "); n == name {
			return l
		}
	}
	return name
}

// parseError is a number qemu-io's cvtnum cannot read.
type parseError struct {
	arg      string
	tooLarge bool // a size past INT64_MAX (qemu-io's ERANGE)
}

func (e *parseError) Error() string {
	if e.tooLarge {
		return "Parsing error: argument too large -- " + e.arg
	}
	return "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- " + e.arg
}

// patternError is a -P byte qemu-io refuses.
type patternError struct{ arg string }

func (e *patternError) Error() string { return e.arg + " is not a valid pattern byte" }

// errPastEnd is a request past the end of the image: EIO, as QEMU's
// block layer refuses it.
var errPastEnd = fmt.Errorf("past the end of the image: %w", syscall.EIO)

// errReported is a failure whose message the command printed itself.
var errReported = errors.New("reported")

// ioNum is qemu-io's cvtnum: a size or offset, or a parseError.
func ioNum(s string) (int64, error) {
	n, err := qcow2.ParseSizeFull(s)
	if errors.Is(err, qcow2.ErrSizeRange) || (err == nil && n > math.MaxInt64) {
		return 0, &parseError{arg: s, tooLarge: true}
	}
	if err != nil {
		return 0, &parseError{arg: s}
	}
	return int64(n), nil
}

// ioVerbs are the names qemu-io's failure lines give commands, where not
// their own: readv for aio_read (qemu-io 7.2's aio_read_done says "readv
// failed"; aio_write's says aio_write).
var ioVerbs = map[string]string{"aio_read": "readv"}

// reportIOError prints err, from a command, where and as qemu-io would:
// most on stdout without a prefix; on stderr, with qimg's prefix where
// qemu-io's error_report adds its own, a write to a read-only image
// ("Block node is read-only") and a failed truncate.
func reportIOError(e *env, stdout io.Writer, err error) {
	var nf *notFoundError
	var ce *cmdError
	var ac stderrError
	var ue *ioUsageError
	var rep *ioReport
	switch {
	case errors.As(err, &nf):
		fmt.Fprintln(e.stderr, nf.Error())
	case errors.As(err, &ac):
		fmt.Fprintln(e.stderr, string(ac))
	case errors.As(err, &rep):
		e.errorf(1, "%s", rep.msg)
	case errors.As(err, &ue) && errors.As(err, &ce):
		if o := ue.opt; o != nil && o.missing {
			fmt.Fprintf(e.stderr, "%s: option requires an argument -- '%c'\n", ce.typed, o.c)
		} else if o != nil {
			fmt.Fprintf(e.stderr, "%s: invalid option -- '%c'\n", ce.typed, o.c)
		}
		fmt.Fprintln(stdout, usageLine(ce.name))
	case errors.Is(err, errPattern), errors.Is(err, errReported):
		// Its line went to stdout already (a pattern mismatch's with
		// the read's result).
	case errors.Is(err, qcow2.ErrReadOnly), errors.Is(err, block.ErrReadOnly):
		e.errorf(1, "Block node is read-only")
	case errors.As(err, &ce) && ce.name == "truncate" && !errors.As(err, new(*parseError)):
		e.errorf(1, "%v", ce.err) // error_report, but a size it cannot read (print_cvtnum_err)
	case errors.As(err, &ce):
		if errors.Is(err, vmdk.ErrStreamAllocated) {
			// QEMU's vmdk says it with error_report before failing
			// the request.
			e.errorf(1, "Could not write to allocated cluster for streamOptimized")
		}
		fmt.Fprintln(stdout, ioErrorText(ce))
	default:
		fmt.Fprintln(stdout, err)
	}
}

// asyncFailed reports whether err is an aio_read's or aio_write's
// request that failed, not its command line: qemu-io reports it when the
// request completes, and the command itself succeeded (exit code 0).
// aio_read's pattern mismatch is one too (aio_read_done prints it, the
// command has returned 0 by then), unlike read's and readv's.
func asyncFailed(err error) bool {
	var ce *cmdError
	if !errors.As(err, &ce) || (ce.name != "aio_read" && ce.name != "aio_write") {
		return false
	}
	if errors.Is(err, errPattern) {
		return ce.name == "aio_read"
	}
	verb := ce.name
	if v, ok := ioVerbs[verb]; ok {
		verb = v
	}
	return strings.HasPrefix(ioErrorText(ce), verb+" failed: ")
}

// ioErrorText is qemu-io's line for a failed command: "VERB failed:
// REASON" for a request that failed (an errno, as strerror words it, a
// range past the end, a device or engine refusal), else the complaint
// about the command line itself, as it is.
func ioErrorText(ce *cmdError) string {
	verb := ce.name
	if v, ok := ioVerbs[verb]; ok {
		verb = v
	}
	var en syscall.Errno
	var oe *block.OpError
	switch {
	case errors.Is(ce.err, errPastEnd):
		return verb + " failed: Input/output error"
	case errors.As(ce.err, &en):
		return verb + " failed: " + (&capitalized{err: en}).Error()
	case errors.Is(ce.err, block.ErrNotSupported):
		// A refusal (write -z -n that cannot zero efficiently): QEMU's
		// ENOTSUP, in strerror's words.
		return verb + " failed: Operation not supported"
	case errors.As(ce.err, &oe) || ioRefusal(ce.err):
		return verb + " failed: " + ce.err.Error()
	}
	return ce.err.Error()
}

// ioRefusal reports whether err is the device's or the engine's refusal
// of a request (not a complaint about the command line).
func ioRefusal(err error) bool {
	for _, e := range []error{block.ErrReadOnly, block.ErrRange, block.ErrNotSupported, block.ErrClosed,
		block.ErrFlushFailed, block.ErrBusy, qcow2.ErrOutOfRange, qcow2.ErrNotCompressible, qcow2.ErrCorrupt,
		qcow2.ErrUnsupported, qcow2.ErrReadOnly, qcow2.ErrNoKey, qcow2.ErrDataFile} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
