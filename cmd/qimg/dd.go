package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// ddArgs are qemu-img dd's operands.
type ddArgs struct {
	in, out           string
	bs, count, skip   int64
	hasCount, hasSkip bool
}

// parseDD parses dd's operands (bs=, count=, skip=, if=, of=) with
// qemu-img's messages.
func parseDD(operands []string) (ddArgs, error) {
	a := ddArgs{bs: 512}
	for _, op := range operands {
		k, v, ok := strings.Cut(op, "=")
		if !ok {
			return a, fmt.Errorf("unrecognized operand %s", op)
		}
		num := func(what string, lo, hi int64) (int64, error) {
			// qemu-img's cvtnum_full: any size qemu_strtosz reads, then
			// its range (a size past 2^64-1 is out of it too).
			u, err := qcow2.ParseSizeFull(v)
			if err != nil && !errors.Is(err, qcow2.ErrSizeRange) {
				return 0, fmt.Errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", what)
			}
			n := int64(u)
			if err != nil || u < uint64(lo) || u > uint64(hi) {
				return 0, fmt.Errorf("Invalid %s specified. Must be between %d and %d.", what, lo, hi)
			}
			return n, nil
		}
		var err error
		switch k {
		case "bs":
			a.bs, err = num("bs", 1, 1<<31-1)
		case "count":
			a.count, err = num("count", 0, 1<<63-1)
			a.hasCount = true
		case "skip":
			a.skip, err = num("skip", 0, 1<<63-1)
			a.hasSkip = true
		case "if":
			a.in = v
		case "of":
			a.out = v
		default:
			err = fmt.Errorf("unrecognized operand %s", k)
		}
		if err != nil {
			return a, err
		}
	}
	if a.in == "" || a.out == "" {
		return a, errors.New("Must specify both input and output files")
	}
	return a, nil
}

// runDD is qemu-img dd: the input from block skip on (count blocks from
// the start of the input, as qemu-img counts them), copied block by
// block into a new image of format -O (raw by default).
func runDD(e *env, args []string) int {
	o, err := e.getopt(args, "f:O:U", "image-opts", "force-share", "object:")
	if err != nil {
		return e.usageErr(err)
	}
	a, err := parseDD(o.args)
	if err != nil {
		// One line each, as qemu-img's error_report calls.
		for _, l := range strings.Split(err.Error(), "\n") {
			e.errorf(1, "%s", l)
		}
		return 1
	}
	outFmt := o.get("O", "raw")
	if outFmt != "raw" && outFmt != "qcow2" && outFmt != "vpc" && outFmt != "vmdk" && outFmt != "luks" { // luks: refused by its create (dd has no -o for a key-secret), as qemu-img dd
		if !imgopen.QemuDriver(outFmt) {
			return e.errorf(1, "Unknown file format") // qemu-img dd names none
		}
		return e.errorf(1, "%v", outFormatError(outFmt))
	}
	spec, err := o.imageSpec(a.in, imgopen.Spec{Format: o.get("f", ""), ReadOnly: true, Opts: qcow2.Options{ForceShare: o.forceShare()}})
	if err != nil {
		return e.usageErr(err)
	}
	in, err := openImage(spec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	defer in.Close()
	size, err := in.Dev.Size()
	if err != nil {
		return e.errorf(1, "%s: %v", a.in, err)
	}
	if a.hasCount && a.count <= (1<<63-1)/a.bs && a.count*a.bs < size {
		size = a.count * a.bs
	}
	pos, outSize := a.skip*a.bs, int64(0)
	if a.hasSkip && (a.skip > (1<<63-1)/a.bs || size < a.skip*a.bs) {
		// As dd(1): a warning, and an empty output.
		fmt.Fprintf(e.stderr, "qimg: dd: %s: cannot skip to specified offset\n", a.in)
		pos = size
	} else {
		outSize = size - pos
	}
	req := &createRequest{path: a.out, file: a.out, format: outFmt, opts: qcow2.CreateOptions{Size: outSize}, given: map[string]bool{}}
	if err := req.resolveFile(); err != nil {
		return e.errorf(1, "%v", err) // as qemu-img dd: without the name
	}
	if err := doCreate(req); err != nil {
		return e.errorf(1, "%s: error while creating output image: %v", a.out, err)
	}
	out, err := openImage(imgopen.Spec{Path: req.file, Format: outFmt})
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	err = ddCopy(in, out, pos, size, a.bs)
	if err == nil {
		// Durable before the exit says done, whatever the output (a
		// raw file's or an export's Close does not flush), as
		// qemu-img's close flushes.
		err = out.Dev.Flush()
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	return 0
}

// ddCopy copies [pos, size) of in to the start of out in blocks of bs.
func ddCopy(in, out *imgopen.Opened, pos, size, bs int64) error {
	buf := make([]byte, min(bs, max(size-pos, 0)))
	for at := int64(0); pos < size; {
		n := min(bs, size-pos)
		if err := in.Dev.Readv(pos, [][]byte{buf[:n]}); err != nil {
			return fmt.Errorf("error while reading from input image file: %w", err)
		}
		if err := out.Dev.Writev(at, [][]byte{buf[:n]}); err != nil {
			return fmt.Errorf("error while writing to output image file: %w", err)
		}
		pos += n
		at += n
	}
	return nil
}
