// Command qbench is qemu-img bench for the qring engine: the same flags and
// output lines, plus latency percentiles, CPU time, engine counters, JSON
// and go-bench output, and profiling hooks. It only maps flags to a
// bench.Config and prints; the workload lives in internal/bench.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"

	"github.com/qring/qring/cmd/internal/buildinfo"
	"github.com/qring/qring/internal/bench"
	"github.com/qring/qring/internal/imgopen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole CLI, callable in-process by tests: it returns the exit
// status (0, or 1 after one "qbench: ..." line on stderr).
func run(args []string, stdout, stderr io.Writer) int {
	cl, err := parse(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, buildinfo.Version("qbench"))
		return 0
	}
	if err == nil {
		err = cl.cfg.Resolve()
	}
	if err != nil {
		fmt.Fprintf(stderr, "qbench: %v\n", err)
		return 1
	}
	if err := execute(cl, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "qbench: %v\n", err)
		return 1
	}
	return 0
}

func execute(cl *cli, stdout, stderr io.Writer) (err error) {
	cfg := cl.cfg
	if !cl.json {
		cfg.Out = stdout
	}
	cfg.Warn = stderr
	if cfg.Engine.RepairLog == nil {
		// A dirty image's repair on a writable open (-w) prints its
		// lines on stderr, as qemu-img bench's.
		cfg.Engine.RepairLog = func(s string) { fmt.Fprintln(stderr, s) }
	}
	if !cl.json && !cfg.Quiet && isTerminal(stderr) && isTerminal(stdout) {
		p := &progressBar{w: stderr}
		cfg.Progress = p.update
		defer p.clear()
	}

	for _, r := range []struct {
		path  string
		start func(io.Writer) error
		stop  func()
	}{
		{cl.cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{cl.trace, trace.Start, trace.Stop},
	} {
		if r.path == "" {
			continue
		}
		stop, err := record(r.path, r.start, r.stop)
		if err != nil {
			return err
		}
		defer stop()
	}

	var res bench.Result
	if cl.spec != "" {
		res, err = runSpec(cl.spec, cl.specFormat, cfg)
	} else {
		if cfg.Seed() && !cfg.Keep {
			c := cleanOnSignal()
			defer c.stop()
			cfg.SeedDir = c.seedDir
		}
		res, err = bench.Run(cfg)
	}
	if err != nil {
		return err
	}

	if cl.memProfile != "" {
		f, err := os.Create(cl.memProfile)
		if err != nil {
			return err
		}
		runtime.GC() // up-to-date live-heap statistics
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}

	if cl.json {
		b, err := json.Marshal(&res)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		res.WriteSummary(stdout)
		if res.Seed && cfg.Keep {
			fmt.Fprintf(stdout, "Kept image %s\n", res.Created)
		}
	}
	if cl.gobench {
		// stdout holds only the JSON with --json.
		w := stdout
		if cl.json {
			w = stderr
		}
		fmt.Fprintln(w, res.GoBenchLine())
	}
	return nil
}

// record creates path and starts a recording into it (a CPU profile, an
// execution trace); the function it returns stops the recording and
// closes the file.
func record(path string, start func(io.Writer) error, stop func()) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		stop()
		f.Close()
	}, nil
}

// runSpec runs the benchmark on a driver stack: the spec's leaves get the
// run's cache mode, AIO and engine options; a read test opens them
// read-only, as bench.Run does for a file. format ("": the spec's) is
// the root's driver.
func runSpec(spec, format string, cfg bench.Config) (bench.Result, error) {
	img, err := imgopen.OpenSpec(spec, imgopen.Spec{Format: format, Cache: cfg.Cache, AIO: cfg.OpenAIO(),
		ReadOnly: !cfg.Write, Opts: cfg.Engine})
	if err != nil {
		return bench.Result{}, err
	}
	if cfg.Write {
		img.GuardProbed(cfg.Warn) // a spec without driver= probed as raw
	}
	res, err := bench.RunOn(img, cfg)
	if cerr := img.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	// The fill workers ran until Close: count what they wrote.
	res.Closed(img.Image)
	return res, err
}
