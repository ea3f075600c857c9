// Command qimg is a qemu-img / qemu-io work-alike for qcow2 and raw images
// on the qring engine (io_uring backend). It is a thin CLI: each subcommand
// parses its flags, calls a function of this package that does the work on
// the engine API, and prints the result in qemu-img's formats.
//
//	qimg create  [-f qcow2|raw] [-o opts] [-b backing -F fmt] FILE [SIZE]
//	qimg info    [-f fmt] [--output=human|json] [--metrics] FILE
//	qimg check   [-f fmt] [-r leaks|all] [--output=human|json] FILE
//	qimg map     [-f fmt] [--output=human|json] FILE
//	qimg compare [-f fmt] [-F fmt] [-s] A B
//	qimg convert [-f fmt] -O raw|qcow2 [-o opts | -n] [-p] IN OUT
//	qimg io      [-f fmt] [-t cache] [-i aio] FILE -c CMD [-c CMD ...]
//	             (FILE may be a stack spec: json:{...}, or driver=... with
//	             or without --image-opts; see internal/imgopen)
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/qring/qring/internal/secret"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// env is what a subcommand prints to.
type env struct {
	name           string
	stdout, stderr io.Writer
}

// errorf prints one "qimg: <cmd>: <msg>" line on stderr and returns code.
// A failed request in it is worded as QEMU words it (qemuErrnoText).
func (e *env) errorf(code int, format string, a ...any) int {
	msg := qemuErrnoText(fmt.Sprintf(format, a...), a)
	msg = strings.ReplaceAll(strings.TrimRight(msg, "\n"), "\n", "; ")
	fmt.Fprintf(e.stderr, "qimg: %s: %s\n", e.name, msg)
	return code
}

// usageErr reports a command-line error together with the usage line.
func (e *env) usageErr(err error) int {
	var oe *OpenError
	var se *secret.Error
	if errors.As(err, &oe) || errors.Is(err, errImageOptsFormat) || errors.As(err, &se) {
		// The open's error, or an --object's (qemu-img creates the
		// objects first), not the command line's.
		return e.errorf(1, "%v", err)
	}
	return e.errorf(1, "%v (usage: qimg %s %s)", err, e.name, commands[e.name].usage)
}

type command struct {
	run   func(e *env, args []string) int
	usage string
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"create":   {runCreate, "[-q] [-u] [--object ...] [-f fmt] [-o options] [-b backing_file -F backing_fmt] FILE [SIZE]"},
		"info":     {runInfo, "[-f fmt] [--output=human|json] [--backing-chain] [--metrics] [-t cache] [-U] [-o engine_options] [--object ...] [--image-opts] FILE"},
		"check":    {runCheck, "[-q] [-f fmt] [-r leaks|all] [--output=human|json] [-T cache] [-U] [-o engine_options] [--object ...] [--image-opts] FILE"},
		"map":      {runMap, "[-f fmt] [--start-offset=OFFSET] [--max-length=LEN] [--output=human|json] [-U] [-o engine_options] [--object ...] [--image-opts] FILE"},
		"compare":  {runCompare, "[-f fmt] [-F fmt] [-s] [-p] [-q] [-T cache] [-U] [--object ...] [--image-opts] FILE1 FILE2"},
		"convert":  {runConvert, "[--object ...] [--image-opts | -f fmt] [-O fmt] [-o options | -n [--target-is-zero] [--target-image-opts]] [-B backing_file -F backing_fmt] [-c | -C] [-S size] [-r rate] [-l snapshot_param] [--salvage] [--bitmaps [--skip-broken-bitmaps]] [-p] [-q] [-U] [-m num_coroutines] [-W] [-t cache] [-T cache] IN [IN...] OUT"},
		"io":       {runIO, "[-f fmt] [-t cache] [-n] [-i aio] [-d discard] [-r] [-s] [-C] [-U] [-o engine_options] [--object ...] [--image-opts] [-c CMD]... [FILE|json:{...}]"},
		"resize":   {runResize, "[-f fmt] [--preallocation=off|metadata|falloc|full] [-q] [--shrink] [--object ...] [--image-opts] FILE [+|-]SIZE"},
		"rebase":   {runRebase, "[-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] -b BACKING [-F backing_fmt] [--object ...] [--image-opts] FILE"},
		"commit":   {runCommit, "[-f fmt] [-t cache] [-b base] [-r rate] [-d] [-p] [-q] [--object ...] [--image-opts] FILE"},
		"amend":    {runAmend, "[-f qcow2|luks] [-t cache] [-p] [-q] -o help | -o compat=0.10|1.1,lazy_refcounts=on|off,refcount_bits=N,size=SIZE [--object ...] [--image-opts] FILE"},
		"measure":  {runMeasure, "[--output=human|json] [-O raw|qcow2|luks] [-o options] (--size SIZE | [--object ...] [--image-opts] [-f fmt] [-l snapshot_param] FILE)"},
		"dd":       {runDD, "[--image-opts] [-U] [-f fmt] [-O fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output"},
		"bitmap":   {runBitmap, "(--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object ...] [--image-opts | -f fmt] FILE BITMAP"},
		"bench":    {runBench, "[-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [--no-drain] [-o offset] [--pattern=pattern_byte] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] [--object ...] [--image-opts] FILE"},
		"snapshot": {runSnapshot, "[-q] [-U] [--object ...] [--image-opts] [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] FILE"},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: qimg COMMAND [options]")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  qimg %s %s\n", n, commands[n].usage)
	}
}

// run is the whole CLI: main only calls it and exits with its result.
func run(args []string, stdout, stderr io.Writer) (code int) {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "qimg: missing command (try 'qimg help')")
		return 1
	}
	switch args[0] {
	case "help", "-h", "--help":
		if len(args) > 1 {
			if _, ok := commands[args[1]]; ok {
				commandUsage(stdout, args[1])
				return 0
			}
			fmt.Fprintf(stderr, "qimg: unknown command %q (try 'qimg help')\n", args[1])
			return 1
		}
		usage(stdout)
		return 0
	case "--version", "-V":
		version(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "qimg: unknown command %q (try 'qimg help')\n", args[0])
		return 1
	}
	if wantsHelp(args[1:]) {
		commandUsage(stdout, args[0])
		return 0
	}
	e := &env{name: args[0], stdout: stdout, stderr: stderr}
	defer func() {
		if r := recover(); r != nil {
			code = e.errorf(1, "internal error: %v", r)
		}
	}()
	return c.run(e, args[1:])
}
