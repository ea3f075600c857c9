package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/bench"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// cli is the parsed command line: the benchmark Config plus what only the
// command does (output format, profiles).
type cli struct {
	cfg        bench.Config
	json       bool
	gobench    bool
	cpuProfile string
	memProfile string
	trace      string
	// spec is a driver stack (json:{...} or driver=...) opened with
	// imgopen.OpenSpec instead of FILE; specFormat is -f over a json:
	// spec's root driver (QEMU's priority of the options given outside
	// the name).
	spec, specFormat string
}

func usage() string {
	return `usage: qbench [flags] [FILE]

Runs qemu-img bench's workload on the qring engine. Without FILE, creates a
fresh 4 GiB qcow2 image (64 KiB clusters) in a temporary directory, runs a
write test on it with -t none, and deletes it (the seed benchmark).
With FILE, qemu-img semantics: a read test unless -w, cache writeback unless -t.

qemu-img bench flags (same meaning and defaults):
  -c, -n COUNT        requests (default 75000; k/M/G = powers of 1024: 1M = 1048576).
                      Note: -n is a count here, not qemu-img's native-AIO switch.
  -d DEPTH            requests in parallel (default 64)
  -f FMT              qcow2 or raw (default: probe; qcow2 for created images)
  -o OFFSET           first offset (default 0). An -o argument containing '='
                      is image/engine options instead (see -o name=value below).
  -s SIZE             bytes per request (default 4k)
  -S STEP             offset step (default, and 0, = SIZE, as in qemu-img 7.2).
                      Offsets wrap as in QEMU 7.2: next = (offset + STEP) %
                      image size. An OFFSET at or past the end of the image,
                      or an image smaller than OFFSET + SIZE, is refused.
  -t CACHE            none (O_DIRECT), writeback, writethrough, directsync, unsafe
                      (writethrough/directsync flush after each write, as
                      qemu's FUA emulation; unsafe ignores flushes)
  -w                  write test (default: read)
  --pattern BYTE      write fill byte, e.g. 0xab (default 0)
  --flush-interval N  flush every N requests (writes only, N >= depth)
  --no-drain          with --flush-interval: flush without draining the queue
  --queue             (the default) one goroutine submits the requests and
                      reaps their completions in batches through qring's
                      asynchronous API (block.Queue: its own io_uring on the
                      file, requests translated by the engine, adjacent ones
                      merged unless -i io_uring-nomerge; requests it cannot
                      translate, such as allocating writes, run the engine's
                      synchronous path), as qemu-img bench's one thread does
                      with its AIO context
  --workers           DEPTH goroutines each issue one synchronous request at a
                      time instead (the default with -i threads)
  -i AIO              io_uring, io_uring-nomerge (adjacent requests are not
                      merged into one SQE) or threads. Given explicitly,
                      io_uring fails where no ring can be set up ("Unable
                      to use io_uring"); by default it falls back to threads
                      and the summary says so and why. native (Linux AIO) is
                      not supported.
  -q                  quiet: only "Run completed" and the summary
  -U                  force share: read an image another process writes
                      (images are locked as QEMU locks them; -w refuses -U)
  --rand SEED         random offsets (aligned to SIZE from OFFSET) drawn from
                      SEED; the same SEED revisits the same offsets

Driver stacks (filters over images; see internal/imgopen for the drivers):
  FILE = json:{"driver":"blkverify","test":"t.qcow2","raw":"s.raw"}
  --image-opts        FILE is key=value options: driver=quorum,children=a:b:c
  -o driver=...       the same as an option (then no FILE)

Image and engine options:
  -o name=value[,name=value]   (also -O, --opt; repeatable)
      engine (open) options: ` + strings.Join(openOptionNames(), ", ") + `
      create options (with --create or the seed image): ` + strings.Join(createOptionNames(), ", ") + `
  --prealloc on|off   the engine's cluster preallocation (seed switch)
  --prealloc-size N   reserve host space ahead in chunks of N bytes
  --prealloc-fill M   what to do with the space reserved ahead: zeroes (write
                      zeros over it in the background, ahead of allocation,
                      so new clusters are overwrites), unwritten (leave the
                      fallocated extents), auto (default: zeroes on RAM
                      devices; unwritten
                      on SSDs, HDDs, unknown media, write-throttled devices
                      and where the reserve comes out written, with
                      FALLOC_FL_WRITE_ZEROES)
  --l2-cache-size N   L2 cache size in bytes
  --create SIZE       create a fresh image of SIZE at FILE first
  --cluster-size N    cluster size for created images (default 64k)
  --dir DIR           where the seed image is created (default $TMPDIR)
  --keep              keep the seed image

Output and profiling:
  --json              one JSON object on stdout (and nothing else there)
  --gobench-output    also print a go test -bench line for benchstat
                      (on stderr with --json)
  --cpuprofile FILE   write a CPU profile (runtime/pprof)
  --memprofile FILE   write an allocation profile
  --trace FILE        write a runtime/trace execution trace
  -h, --help          this help
  --version           the version and the commit qbench was built from

A progress bar is drawn on stderr when stdout and stderr are terminals,
unless -q or --json.
`
}

// openOptionNames are the engine options -o takes: the image's open
// options but read-only and repair, which the run decides.
func openOptionNames() []string {
	return qcow2.CommandLineOptionNames
}

// createOptionNames are the create options -o takes: the image's create
// options but size, which --create (or the seed image) gives.
func createOptionNames() []string {
	return without(qcow2.CreateOptionNames, "size")
}

// without returns names minus drop, in the order of names.
func without(names []string, drop ...string) []string {
	var n []string
	for _, k := range names {
		if !slices.Contains(drop, k) {
			n = append(n, k)
		}
	}
	return n
}

// parseSize parses an offset or size as qemu-img bench (qemu_strtosz:
// decimal, 0x hexadecimal, k/M/G... suffixes in powers of 1024).
func parseSize(what, s string) (int64, error) {
	n, err := qcow2.ParseSize(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid %s %q", what, s)
	}
	return n, nil
}

// parseCount parses a request count, queue depth or flush interval as
// qemu-img bench does (C's base 0: 010 is 8, 0x10 is 16), and, beyond
// it, with a size suffix (1M requests).
func parseCount(what, s string) (int64, error) {
	if n, err := qcow2.ParseNumber(s); err == nil && n <= 1<<62 {
		return int64(n), nil
	}
	return parseSize(what, s)
}

// strList collects a repeatable string flag.
type strList []string

func (l *strList) String() string     { return strings.Join(*l, " ") }
func (l *strList) Set(s string) error { *l = append(*l, s); return nil }

// parse maps the command line to a cli. Flags may come before or after
// FILE, as with qemu-img's getopt.
func parse(args []string) (*cli, error) {
	fs := flag.NewFlagSet("qbench", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported as one line by run
	fs.Usage = func() {}
	var (
		count, countN, depth, size, step, pattern, flushInt string
		format, cache, aio, createSize, clusterSize         string
		prealloc, preallocSize, preallocFill, l2CacheSize   string
		dir, randSeed                                       string
		oArgs, optArgs                                      strList
		write, noDrain, quiet, forceShare, keep, imageOpts  bool
		queue, workers                                      bool
		cl                                                  = &cli{}
	)
	fs.StringVar(&count, "c", "", "")
	fs.StringVar(&countN, "n", "", "")
	fs.StringVar(&depth, "d", "", "")
	fs.StringVar(&format, "f", "", "")
	fs.Var(&oArgs, "o", "")
	fs.Var(&optArgs, "O", "")
	fs.Var(&optArgs, "opt", "")
	fs.StringVar(&size, "s", "", "")
	fs.StringVar(&step, "S", "", "")
	fs.StringVar(&cache, "t", "", "")
	fs.BoolVar(&write, "w", false, "")
	fs.StringVar(&pattern, "pattern", "", "")
	fs.StringVar(&flushInt, "flush-interval", "", "")
	fs.BoolVar(&noDrain, "no-drain", false, "")
	fs.BoolVar(&queue, "queue", false, "")
	fs.BoolVar(&workers, "workers", false, "")
	fs.StringVar(&aio, "i", "", "")
	fs.BoolVar(&quiet, "q", false, "")
	fs.BoolVar(&forceShare, "U", false, "")
	fs.StringVar(&dir, "dir", "", "")
	fs.BoolVar(&keep, "keep", false, "")
	fs.StringVar(&createSize, "create", "", "")
	fs.StringVar(&clusterSize, "cluster-size", "", "")
	fs.StringVar(&prealloc, "prealloc", "", "")
	fs.StringVar(&preallocSize, "prealloc-size", "", "")
	fs.StringVar(&preallocFill, "prealloc-fill", "", "")
	fs.StringVar(&l2CacheSize, "l2-cache-size", "", "")
	fs.BoolVar(&cl.json, "json", false, "")
	fs.BoolVar(&cl.gobench, "gobench-output", false, "")
	fs.StringVar(&cl.cpuProfile, "cpuprofile", "", "")
	fs.StringVar(&cl.memProfile, "memprofile", "", "")
	fs.StringVar(&cl.trace, "trace", "", "")
	fs.StringVar(&randSeed, "rand", "", "")
	fs.BoolVar(&imageOpts, "image-opts", false, "")
	showVersion := fs.Bool("version", false, "")

	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" || args[0] == "-" && len(args) > 1 {
			files = append(files, args[1:]...)
			break
		}
		files = append(files, args[0])
		args = args[1:]
	}
	if *showVersion {
		return nil, errVersion
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c := &cl.cfg
	c.Step = -1
	var err error
	switch len(files) {
	case 0:
	case 1:
		c.File = files[0]
	default:
		return nil, fmt.Errorf("expected at most one FILE, got %d: %s", len(files), strings.Join(files, " "))
	}

	if set["c"] && set["n"] && count != countN {
		cn, err1 := parseCount("count", count)
		nn, err2 := parseCount("count", countN)
		if err1 != nil || err2 != nil || cn != nn {
			return nil, fmt.Errorf("-c %s and -n %s disagree (they are the same count; give one)", count, countN)
		}
	}
	if set["n"] {
		count = countN
	}
	if count != "" {
		if c.Count, err = parseCount("request count", count); err != nil {
			return nil, err
		}
		if c.Count == 0 {
			// Count 0 would mean "default" in Config; qemu runs nothing.
			return nil, fmt.Errorf("invalid request count %q (must be at least 1)", count)
		}
	}
	if set["d"] {
		d, err := parseCount("queue depth", depth)
		if err != nil || d < 1 || d >= block.MaxQueueDepth { // one slot more for the flusher
			return nil, fmt.Errorf("invalid queue depth %q (1..%d)", depth, block.MaxQueueDepth-1)
		}
		c.Depth = int(d)
	}
	if set["s"] {
		if c.Size, err = parseSize("request size", size); err != nil {
			return nil, err
		}
		if c.Size == 0 {
			return nil, fmt.Errorf("invalid request size %q", size)
		}
	}
	if set["S"] {
		if c.Step, err = parseSize("step size", step); err != nil {
			return nil, err
		}
	}
	if set["pattern"] {
		p, err := strconv.ParseUint(pattern, 0, 8)
		if err != nil {
			return nil, fmt.Errorf("invalid pattern byte %q (0..255, e.g. 0xab)", pattern)
		}
		c.Pattern = byte(p)
		if !write && c.File != "" {
			return nil, errors.New("--pattern is only available in write tests (-w)")
		}
	}
	if set["flush-interval"] {
		if c.FlushInterval, err = parseCount("flush interval", flushInt); err != nil {
			return nil, err
		}
		if c.FlushInterval == 0 {
			return nil, fmt.Errorf("invalid flush interval %q", flushInt)
		}
	}
	c.Format, c.Cache, c.AIO, c.Dir = format, cache, aio, dir
	c.Write, c.NoDrain, c.Quiet, c.ForceShare, c.Keep = write, noDrain, quiet, forceShare, keep
	if queue && workers {
		return nil, errors.New("--queue and --workers: choose one")
	}
	// The queue by default; workers when asked, and for the syscall
	// backend, whose queue would be a goroutine per request anyway.
	c.Queue = queue || (!workers && aio != "threads")

	if set["rand"] {
		if c.RandSeed, err = strconv.ParseUint(randSeed, 0, 64); err != nil {
			return nil, fmt.Errorf("invalid --rand seed %q", randSeed)
		}
		c.Random = true
	}

	// -o is qemu-img bench's OFFSET unless it carries name=value options.
	var createOpts []string
	for _, o := range oArgs {
		if strings.HasPrefix(o, "driver=") {
			if cl.spec != "" || c.File != "" {
				return nil, errors.New("-o driver=... is the image: give no FILE and one -o driver=")
			}
			cl.spec = o
			continue
		}
		if strings.Contains(o, "=") {
			optArgs = append(optArgs, o)
			continue
		}
		if c.Offset, err = parseSize("offset", o); err != nil {
			return nil, fmt.Errorf("invalid offset %q (an -o with name=value sets options)", o)
		}
	}
	for _, o := range optArgs {
		kvs, err := qcow2.SplitOptions(o)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			k, v := kv[0], kv[1]
			switch {
			case slices.Contains(openOptionNames(), k):
				if err := c.Engine.Set(k, v); err != nil {
					return nil, err // it names the option
				}
				c.EngineOpts = append(c.EngineOpts, k+"="+v)
			case slices.Contains(createOptionNames(), k):
				if err := c.Create.Set(k, v); err != nil {
					return nil, fmt.Errorf("create option %s=%s: %w", k, v, err)
				}
				createOpts = append(createOpts, k)
			default:
				return nil, fmt.Errorf("unknown option %q (engine: %s; create: %s)", k,
					strings.Join(openOptionNames(), ", "), strings.Join(createOptionNames(), ", "))
			}
		}
	}
	// The engine options that are also flags, applied after -o.
	for _, d := range []struct{ name, val string }{
		{"prealloc", prealloc},
		{"prealloc-size", preallocSize},
		{"prealloc-fill", preallocFill},
		{"l2-cache-size", l2CacheSize},
	} {
		if !set[d.name] {
			continue
		}
		if err := c.Engine.Set(d.name, d.val); err != nil {
			return nil, fmt.Errorf("--%s %s: %w", d.name, d.val, err)
		}
		c.EngineOpts = append(c.EngineOpts, d.name+"="+d.val)
	}
	if set["cluster-size"] {
		cs, err := parseSize("cluster size", clusterSize)
		if err != nil {
			return nil, err
		}
		if err := c.Create.Set("cluster_size", strconv.FormatInt(cs, 10)); err != nil {
			return nil, fmt.Errorf("--cluster-size %s: %w", clusterSize, err)
		}
		createOpts = append(createOpts, "cluster_size")
	}
	if set["create"] {
		if c.CreateSize, err = parseSize("image size", createSize); err != nil {
			return nil, err
		}
		if c.CreateSize == 0 {
			return nil, fmt.Errorf("invalid image size %q", createSize)
		}
		if c.File == "" {
			return nil, errors.New("--create needs a FILE")
		}
	}
	if imageOpts || imgopen.IsSpec(c.File) {
		if c.File == "" {
			return nil, errors.New("--image-opts needs FILE (the options)")
		}
		cl.spec = c.File
	}
	if cl.spec != "" && set["f"] {
		if !strings.HasPrefix(cl.spec, "json:") {
			return nil, errors.New("--image-opts and -f are mutually exclusive") // qemu-img's
		}
		cl.specFormat = format
	}
	if cl.spec != "" {
		c.File = cl.spec // for the record; opened by OpenSpec, not as a path
		if c.CreateSize > 0 {
			return nil, errors.New("--create does not apply to a driver stack")
		}
	}
	if len(createOpts) > 0 && c.File != "" && c.CreateSize == 0 {
		return nil, fmt.Errorf("create option %s needs --create SIZE (or no FILE)", createOpts[0])
	}
	if (set["dir"] || keep) && c.File != "" {
		return nil, errors.New("--dir and --keep apply to the temporary seed image only (no FILE)")
	}
	return cl, nil
}
