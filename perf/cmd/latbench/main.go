// Command latbench runs the seed benchmark (qbench's write workload on a
// fresh qcow2 image) with the image file behind a latency-model filter
// (block/latdev), so HDD-like and distributed-storage rows of the seed
// table can be reproduced on any machine:
//
//	host file (uring.File, O_DIRECT) -> latdev.Dev(model) -> qcow2.OpenDevice -> bench.RunOn
//
// The model starts from a preset (-model hdd|distributed|none) and every
// parameter can be overridden (see -h). Output is qbench's --json object
// plus "latdev" (model and cumulative modelled costs).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/qring/qring/block/latdev"
	"github.com/qring/qring/internal/bench"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

type optList []string

func (l *optList) String() string     { return strings.Join(*l, ",") }
func (l *optList) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "latbench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("latbench", flag.ContinueOnError)
	var (
		count    = fs.String("n", "64k", "requests (k/M = powers of 1024)")
		size     = fs.String("s", "4k", "bytes per request")
		depth    = fs.Int("d", bench.DefaultDepth, "requests in parallel")
		imgSize  = fs.String("image-size", "4G", "size of the fresh qcow2 image")
		dir      = fs.String("dir", os.TempDir(), "directory for the fresh image")
		preset   = fs.String("model", "hdd", "latency model preset: hdd, distributed, none")
		prealloc = fs.String("prealloc", "", "engine prealloc on|off (shorthand for -o prealloc=)")
		prsize   = fs.String("prealloc-size", "", "engine prealloc-size (0 = no preallocation ahead)")
		jsonOut  = fs.Bool("json", false, "print one JSON object")
		sleep    = fs.String("sleep", "precise", "how modelled costs are waited out: precise (sleep, then spin the last ~1.2 ms) or os (time.Sleep; ~1 ms granularity)")
		opts     optList
		m        modelFlags
	)
	fs.Var(&opts, "o", "engine options name=value[,name=value] (repeatable)")
	m.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: latbench [flags]\n\nThe seed benchmark over a latency-model device (block/latdev).\nModel overrides apply on top of -model; durations like 500us, 4ms.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	model, err := m.model(*preset)
	if err != nil {
		return err
	}
	switch *sleep {
	case "precise":
		model.Sleep = preciseSleep
	case "os":
	default:
		return fmt.Errorf("unknown -sleep %q (precise, os)", *sleep)
	}
	n, err := qcow2.ParseSize(*count)
	if err != nil {
		return fmt.Errorf("-n: %v", err)
	}
	bs, err := qcow2.ParseSize(*size)
	if err != nil {
		return fmt.Errorf("-s: %v", err)
	}
	isz, err := qcow2.ParseSize(*imgSize)
	if err != nil {
		return fmt.Errorf("-image-size: %v", err)
	}
	var eo qcow2.Options
	if *prealloc != "" {
		opts = append(opts, "prealloc="+*prealloc)
	}
	if *prsize != "" {
		opts = append(opts, "prealloc-size="+*prsize)
	}
	for _, o := range opts {
		if err := eo.ParseCommandLine(o); err != nil {
			return err
		}
	}

	tmp, err := os.MkdirTemp(*dir, "latbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "seed.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: isz, ClusterSize: bench.SeedClusterSize}); err != nil {
		return err
	}
	file, err := uring.Open(path, uring.Options{Direct: true})
	if err != nil {
		return err
	}
	dev := latdev.New(file, model)
	defer dev.Close() // closes file
	im, err := qcow2.OpenDevice(dev, eo)
	if err != nil {
		return err
	}
	cfg := bench.Config{
		File: path, Format: "qcow2", Count: n, Depth: *depth, Size: bs, Step: -1,
		Write: true, Cache: "none", Engine: eo, EngineOpts: opts,
	}
	if !*jsonOut {
		cfg.Out = os.Stdout
	}
	res, err := bench.RunOn(&imgopen.Opened{Dev: im, Image: im, File: file}, cfg)
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !*jsonOut {
		res.WriteSummary(os.Stdout)
		st := dev.Stats()
		fmt.Printf("latdev: %d ops, modelled %v (seek %v in %d seeks, alloc %v for %d new extents)\n",
			st.Ops, st.Modelled, st.Seek, st.Seeks, st.Alloc, st.NewExtents)
		return nil
	}
	raw, err := res.MarshalJSON()
	if err != nil {
		return err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return err
	}
	st := dev.Stats()
	obj["latdev"] = map[string]any{
		"preset": *preset,
		"model":  describe(model),
		"stats": map[string]any{
			"ops": st.Ops, "modelled_s": st.Modelled.Seconds(), "seek_s": st.Seek.Seconds(),
			"alloc_s": st.Alloc.Seconds(), "seeks": st.Seeks, "new_extents": st.NewExtents,
		},
	}
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(obj)
}

// modelFlags override a preset's fields; unset flags keep the preset.
type modelFlags struct {
	perOp, seekMin, seekTime, seekMax, allocZero, allocWrite, flush durFlag
	seekDist, bandwidth, allocGran                                  intFlag
	parallel                                                        intFlag
}

type durFlag struct {
	set bool
	v   time.Duration
}

func (f *durFlag) String() string { return f.v.String() }
func (f *durFlag) Set(s string) (err error) {
	f.v, err = time.ParseDuration(s)
	f.set = err == nil
	return err
}

type intFlag struct {
	set bool
	v   int64
}

func (f *intFlag) String() string { return fmt.Sprint(f.v) }
func (f *intFlag) Set(s string) (err error) {
	f.v, err = qcow2.ParseSize(s)
	f.set = err == nil
	return err
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.Var(&m.perOp, "per-op", "cost charged to every op (command overhead / network round trip)")
	fs.Var(&m.seekMin, "seek-min", "cost of any non-sequential op (settle + rotational latency)")
	fs.Var(&m.seekTime, "seek-time", "head travel cost per -seek-distance bytes")
	fs.Var(&m.seekDist, "seek-distance", "bytes of travel that cost -seek-time")
	fs.Var(&m.seekMax, "seek-max", "cap on one seek (full stroke); 0 = none")
	fs.Var(&m.bandwidth, "bw", "transfer rate in bytes/s (e.g. 150000000); 0 = unlimited")
	fs.Var(&m.allocGran, "alloc-gran", "extent size at which new space is tracked (e.g. 1M)")
	fs.Var(&m.allocZero, "alloc-zero", "cost per new extent first touched by fallocate/zeroing")
	fs.Var(&m.allocWrite, "alloc-write", "cost per new extent first touched by a data write")
	fs.Var(&m.flush, "flush", "extra cost of a flush")
	fs.Var(&m.parallel, "parallel", "ops serviced at once (1 = single head; 0 = unlimited)")
}

func (m *modelFlags) model(preset string) (latdev.Model, error) {
	var md latdev.Model
	switch preset {
	case "hdd":
		md = latdev.HDD()
	case "distributed":
		md = latdev.Distributed()
	case "none", "":
	default:
		return md, fmt.Errorf("unknown -model %q (hdd, distributed, none)", preset)
	}
	for _, d := range []struct {
		f *durFlag
		p *time.Duration
	}{{&m.perOp, &md.PerOp}, {&m.seekMin, &md.SeekMin}, {&m.seekTime, &md.SeekTime}, {&m.seekMax, &md.SeekMax},
		{&m.allocZero, &md.AllocZero}, {&m.allocWrite, &md.AllocWrite}, {&m.flush, &md.Flush}} {
		if d.f.set {
			*d.p = d.f.v
		}
	}
	if m.seekDist.set {
		md.SeekDistance = m.seekDist.v
	}
	if m.bandwidth.set {
		md.Bandwidth = m.bandwidth.v
	}
	if m.allocGran.set {
		md.AllocGranularity = m.allocGran.v
	}
	if m.parallel.set {
		md.Parallel = int(m.parallel.v)
	}
	return md, nil
}

// preciseSleep waits d with microsecond accuracy. time.Sleep rounds short
// waits up to about a millisecond when the process is otherwise idle (the
// runtime's poller blocks with millisecond timeouts), which would turn an
// HDD model's 80 µs sequential op into 1 ms; so the last stretch is spun,
// yielding the processor between checks.
func preciseSleep(d time.Duration) {
	const spin = 1200 * time.Microsecond
	end := time.Now().Add(d)
	if d > spin {
		time.Sleep(d - spin)
	}
	for time.Now().Before(end) {
		runtime.Gosched()
	}
}

func describe(m latdev.Model) map[string]any {
	return map[string]any{
		"per_op": m.PerOp.String(), "seek_min": m.SeekMin.String(), "seek_time": m.SeekTime.String(),
		"seek_distance": m.SeekDistance, "seek_max": m.SeekMax.String(), "bandwidth": m.Bandwidth,
		"alloc_granularity": m.AllocGranularity, "alloc_zero": m.AllocZero.String(),
		"alloc_write": m.AllocWrite.String(), "flush": m.Flush.String(), "parallel": m.Parallel,
	}
}
