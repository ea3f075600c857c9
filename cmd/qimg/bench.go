package main

import (
	"errors"
	"fmt"
	"math"

	"github.com/qring/qring/internal/bench"
	"github.com/qring/qring/internal/cnum"
	"github.com/qring/qring/internal/imgopen"
)

// runBench is qemu-img bench: its options, read as qemu-img 7.2 reads
// them and refused in its words, and its two lines ("Sending ...", "Run
// completed in ..."); the workload is qbench's (internal/bench), so
// -S, --flush-interval and --no-drain behave as there. Where qemu-img
// fails late or not at all, qimg refuses first: a queue depth of 0
// (qemu-img hangs), requests of no bytes, requests past the end of the
// image (qemu-img fails them with EIO), -n (Linux AIO, which qring has
// not), -t none with requests not a multiple of 512 bytes. qbench is the same
// benchmark with its own flags and more output.
func runBench(e *env, args []string) int {
	o, err := e.getopt(args, "c:d:f:ni:o:qs:S:t:wU", "pattern:", "no-drain", "flush-interval:",
		"image-opts", "object:", "force-share")
	if err != nil {
		return e.usageErr(err)
	}
	cfg, err := benchConfig(o)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	if len(o.args) != 1 {
		return e.usageErr(errors.New("Expecting one image file name"))
	}
	if cfg.FlushInterval > 0 && !cfg.Write {
		return e.errorf(1, "--flush-interval is only available in write tests")
	}
	if cfg.FlushInterval > 0 && cfg.FlushInterval < int64(cfg.Depth) {
		return e.errorf(1, "Flush interval can't be smaller than depth")
	}
	if o.has("n") {
		return e.errorf(1, "%v", imgopen.ErrNativeAIO)
	}
	spec, err := o.imageSpec(o.args[0], imgopen.Spec{Format: o.get("f", ""), Cache: cfg.Cache, AIO: o.get("i", ""),
		ReadOnly: !cfg.Write})
	if err != nil {
		return e.usageErr(err)
	}
	spec.Opts.ForceShare = cfg.ForceShare
	img, err := openImage(spec)
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	if cfg.Write {
		img.GuardProbed(e.stderr) // as qemu-img bench -w: QEMU's raw restriction
	}
	cfg.Out = e.stdout
	if cfg.Count == 0 {
		// qemu-img sends nothing; bench's 0 is its default count.
		if err := img.Close(); err != nil {
			return e.errorf(1, "%v", err)
		}
		step := cfg.Step
		if step == 0 {
			step = cfg.Size
		}
		fmt.Fprintf(e.stdout, "Sending 0 %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n",
			map[bool]string{true: "write", false: "read"}[cfg.Write], cfg.Size, cfg.Depth, cfg.Offset, step)
		fmt.Fprintln(e.stdout, "Run completed in 0.000 seconds.")
		return 0
	}
	_, err = bench.RunOn(img, cfg)
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	var re *bench.RequestError
	if errors.As(err, &re) {
		return e.errorf(1, "Failed request: %s", strerrorOf(re.Err)) // qemu-img's words
	}
	if err != nil {
		return e.errorf(1, "%v", err)
	}
	return 0
}

// benchConfig reads qemu-img bench's options into a bench.Config, in the
// order and words of qemu-img 7.2's img_bench: counts as qemu_strtoul
// (base 0) up to INT_MAX, sizes as cvtnum.
func benchConfig(o *opts) (bench.Config, error) {
	cfg := bench.Config{Count: bench.DefaultCount, Depth: bench.DefaultDepth, Size: bench.DefaultSize,
		Write: o.has("w"), ForceShare: o.has("U") || o.has("force-share"), File: "-"}
	count := func(k, what string) (int64, bool, error) {
		if !o.has(k) {
			return 0, false, nil
		}
		v, ok := cnum.Uint64(o.get(k, ""))
		if !ok || v > math.MaxInt32 {
			return 0, false, fmt.Errorf("Invalid %s specified", what)
		}
		return int64(v), true, nil
	}
	if n, set, err := count("c", "request count"); err != nil {
		return cfg, err
	} else if set {
		cfg.Count = n
	}
	if n, set, err := count("d", "queue depth"); err != nil {
		return cfg, err
	} else if set {
		if n == 0 {
			return cfg, errors.New("Invalid queue depth specified")
		}
		cfg.Depth = int(n)
	}
	if v := o.get("i", ""); o.has("i") {
		switch v {
		case "threads", "native", "io_uring":
		default:
			return cfg, fmt.Errorf("Invalid aio option: %s", v)
		}
	}
	if o.has("o") {
		n, err := cvtnum("offset", o.get("o", ""))
		if err != nil {
			return cfg, err
		}
		cfg.Offset = n
	}
	for _, s := range []struct {
		k, what string
		v       *int64
	}{{"s", "buffer size", &cfg.Size}, {"S", "step_size", &cfg.Step}} {
		if !o.has(s.k) {
			continue
		}
		n, err := cvtnum(s.what, o.get(s.k, ""))
		if err == nil && n > math.MaxInt32 {
			err = fmt.Errorf("Invalid %s specified. Must be between 0 and %d.", s.what, math.MaxInt32)
		}
		if err == nil && n == 0 && s.k == "s" {
			// qemu-img sends requests of no bytes; qimg refuses them.
			err = fmt.Errorf("Invalid %s specified. Must be between 1 and %d.", s.what, math.MaxInt32)
		}
		if err != nil {
			return cfg, err
		}
		*s.v = n
	}
	cfg.Cache = o.get("t", "writeback")
	switch cfg.Cache {
	case "none", "off", "writeback", "writethrough", "directsync", "unsafe":
		if cfg.Cache == "off" {
			cfg.Cache = "none"
		}
	default:
		return cfg, errors.New("Invalid cache mode")
	}
	if v := o.get("pattern", ""); o.has("pattern") {
		p, ok := cnum.Uint64(v)
		if !ok || p > 0xff {
			return cfg, errors.New("Invalid pattern byte specified")
		}
		if cfg.Write {
			cfg.Pattern = byte(p) // a read test ignores it, as qemu-img's
		}
	}
	if n, set, err := count("flush-interval", "flush interval"); err != nil {
		return cfg, err
	} else if set {
		cfg.FlushInterval = n
	}
	cfg.NoDrain = o.has("no-drain") && cfg.FlushInterval > 0 // alone it changes nothing, as qemu-img's
	// One goroutine submits and reaps through the engine's asynchronous
	// API, as qemu-img bench's one thread does (qbench's default);
	// DEPTH synchronous workers with -i threads.
	cfg.Queue = o.get("i", "") != "threads"
	return cfg, nil
}
