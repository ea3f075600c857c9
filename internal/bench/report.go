package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Result is the outcome of one run.
type Result struct {
	Config          Config // effective settings
	Created         string // image created by the run ("" if none)
	Seed            bool   // the run created and used a temporary seed image
	ClusterSize     int64  // qcow2 cluster size (0 for raw)
	Backend         string // host I/O backend of the image file, if known
	BackendReason   string // why: "requested", "io_uring", or why the default fell back to threads
	Zeroing         string // how the image file's Allocate zeroing works (uring File.Zeroing), if known
	RingFeatures    string // the optional ring features the image file's ring took (uring File.RingFeatures)
	ImageSize       int64
	Requests        int64
	BytesPerRequest int64
	Depth           int
	Elapsed         time.Duration // first submission to last completion
	FinalFlush      time.Duration // not part of Elapsed
	Flushes         int64         // interval flushes during the run
	Latency         Histogram     // per request, submission to completion
	UserCPU, SysCPU time.Duration // process CPU during Elapsed
	// Engine counters over the run and final flush (nil for raw images);
	// Uring counters of the image file (nil when unknown or on the threads
	// backend, which makes no io_uring_enter calls).
	//
	// The fill counters of Engine (FillBytes, FillWaits, FillErrors) are
	// the exception once FillFinal: with prealloc-fill=zeroes the fill
	// workers go on streaming zeros after the last request, until Close
	// stops them, so Run (and callers of RunOn, through Closed) count
	// them up to Close: all that was filled.
	Engine *qcow2.Metrics
	Uring  *uring.Metrics
	// FillFinal: Engine's fill counters were read after the image was
	// closed (Closed), when no fill worker ran any more. FillAfterRun is
	// then the part of Engine.FillBytes written after the last request
	// completed (during the final flush and Close), outside Elapsed.
	FillFinal    bool
	FillAfterRun int64

	engine0 qcow2.Metrics // engine counters when the run started
	fillEnd int64         // the engine's FillBytes at the last completion
}

// Closed completes the engine's fill counters once im, the image the run
// used, is closed (Image.Close stops the fill and waits for the pieces in
// flight, so the counters are final then; Image.Metrics only loads
// atomic counters and immutable fields, so it is safe after Close). Run
// calls it; a caller of RunOn calls it after closing the image. It does
// nothing for a raw run or a second time.
func (r *Result) Closed(im *qcow2.Image) {
	if r.Engine == nil || im == nil || r.FillFinal {
		return
	}
	m := im.Metrics().Sub(r.engine0)
	e := r.Engine
	e.FillBytes, e.FillWaits, e.FillErrors = m.FillBytes, m.FillWaits, m.FillErrors
	r.FillAfterRun = m.FillBytes - (r.fillEnd - r.engine0.FillBytes)
	r.FillFinal = true
}

// IOPS is requests per second.
func (r *Result) IOPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// MiBps is throughput in MiB/s.
func (r *Result) MiBps() float64 {
	return r.IOPS() * float64(r.BytesPerRequest) / (1 << 20)
}

// WriteSummary prints the lines qbench adds after qemu-img's output.
func (r *Result) WriteSummary(w io.Writer) {
	h := &r.Latency
	fmt.Fprintf(w, "%.0f IOPS, %.1f MiB/s; latency us: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		r.IOPS(), r.MiBps(), us(h.Quantile(.5)), us(h.Quantile(.9)), us(h.Quantile(.99)), us(h.Quantile(.999)), us(h.Max()))
	fmt.Fprintf(w, "cpu: user %.3f s, sys %.3f s (%.2f cores); final flush %.3f s\n",
		r.UserCPU.Seconds(), r.SysCPU.Seconds(), (r.UserCPU+r.SysCPU).Seconds()/max(r.Elapsed.Seconds(), 1e-9), r.FinalFlush.Seconds())
	if m := r.Engine; m != nil {
		fmt.Fprintf(w, "engine: clusters allocated %d, fallocates %d, zero-pad bytes %d, COW bytes %d, L2 hits %d, misses %d, flushes %d\n",
			m.ClustersAllocated, m.Fallocates, m.ZeroPadBytes, m.COWBytes, m.L2Hits, m.L2Misses, m.Flushes)
		fmt.Fprintf(w, "prealloc: %s", m.Prealloc)
		if m.Prealloc.Fill == qcow2.FillZeroes {
			fmt.Fprintf(w, "; %d MiB zeroed ahead", m.FillBytes>>20)
			if r.FillFinal {
				fmt.Fprintf(w, " (%d MiB after the last request)", r.FillAfterRun>>20)
			}
			fmt.Fprintf(w, ", %d allocation waits", m.FillWaits)
			if m.FillErrors > 0 {
				fmt.Fprint(w, ", filling stopped by an error")
			}
		}
		fmt.Fprintln(w)
	}
	if u := r.Uring; u != nil {
		fmt.Fprintf(w, "io_uring (%s): %d enters, %d SQEs, %.2f SQEs/enter, %d requests merged (%.2f requests/enter), %d from registered buffers, %d fallocates, %d fsyncs",
			r.Backend, u.Enters, u.SQEs, u.SQEsPerEnter(), u.Merged, u.RequestsPerEnter(), u.Fixed, u.Fallocates, u.Fsyncs)
		if r.RingFeatures != "" {
			fmt.Fprintf(w, "; ring features: %s", r.RingFeatures)
		}
		fmt.Fprintln(w)
		if r.Config.Queue {
			fmt.Fprintf(w, "queue: one goroutine, %d requests ran their synchronous path", u.QueueSlow)
			if m := r.Engine; m != nil {
				fmt.Fprintf(w, "; engine: %d fast, %d allocated", m.QueueFast, m.QueueAlloc)
				if m.QueueAllocSync > 0 {
					fmt.Fprintf(w, " (%d of them handed to the synchronous path)", m.QueueAllocSync)
				}
				fmt.Fprintf(w, ", %d slow", m.QueueSlow)
			}
			fmt.Fprintln(w)
		}
	} else if r.Backend != "" {
		fmt.Fprintf(w, "backend: %s", r.Backend)
		if r.fellBack() {
			fmt.Fprintf(w, " (%s)", r.BackendReason)
		}
		fmt.Fprintln(w)
	}
	if r.Zeroing != "" && r.Config.Write {
		fmt.Fprintf(w, "zeroing: %s\n", r.Zeroing)
	}
}

// fellBack reports whether the backend is not the one asked for: the
// default io_uring fell back to threads, for the reason given.
func (r *Result) fellBack() bool {
	return r.BackendReason != "" && r.BackendReason != "requested" && r.BackendReason != "io_uring"
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/1e3)
}

// GoBenchLine returns a `go test -bench` style line for benchstat, e.g.
// "BenchmarkSeed/qcow2/write/bs=4096/d=64-2  1048576  14305 ns/op  286.3 MB/s ...".
func (r *Result) GoBenchLine() string {
	c := &r.Config
	name := "File"
	if r.Seed {
		name = "Seed"
	}
	op := "read"
	if c.Write {
		op = "write"
	}
	h := &r.Latency
	var b strings.Builder
	fmt.Fprintf(&b, "Benchmark%s/%s/%s/bs=%d/d=%d/t=%s-%d\t%d\t%.1f ns/op\t%.2f MB/s",
		name, c.Format, op, c.Size, c.Depth, c.Cache, runtime.GOMAXPROCS(0),
		r.Requests, float64(r.Elapsed.Nanoseconds())/float64(max(r.Requests, 1)),
		r.IOPS()*float64(r.BytesPerRequest)/1e6)
	fmt.Fprintf(&b, "\t%d p50-ns\t%d p99-ns\t%d p999-ns", h.Quantile(.5).Nanoseconds(), h.Quantile(.99).Nanoseconds(), h.Quantile(.999).Nanoseconds())
	fmt.Fprintf(&b, "\t%.0f cpu-ns/op", float64((r.UserCPU+r.SysCPU).Nanoseconds())/float64(max(r.Requests, 1)))
	return b.String()
}

// JSON schema of --json (field names are stable; engine counters the
// engine does not have are omitted, never reported as 0).
type jsonResult struct {
	Requests        int64      `json:"requests"`
	BytesPerRequest int64      `json:"bytes_per_request"`
	Depth           int        `json:"depth"`
	Seconds         float64    `json:"seconds"`
	IOPS            float64    `json:"iops"`
	MiBps           float64    `json:"mib_per_s"`
	FinalFlushS     float64    `json:"final_flush_s"`
	Flushes         int64      `json:"flushes"`
	Lat             jsonLat    `json:"lat_us"`
	CPU             jsonCPU    `json:"cpu"`
	Engine          jsonEngine `json:"engine"`
	// Prealloc is the strategy the engine chose at open (qcow2 only);
	// engine holds numbers only.
	Prealloc *jsonPrealloc `json:"prealloc,omitempty"`
	Config   jsonConfig    `json:"config"`
}

type jsonPrealloc struct {
	On         bool   `json:"on"`
	Ahead      int64  `json:"ahead"`
	AheadAlign int64  `json:"ahead_align,omitempty"`
	Fill       string `json:"fill,omitempty"`
	FillReason string `json:"fill_reason,omitempty"`
}

type jsonLat struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
}

type jsonCPU struct {
	User float64 `json:"user_s"`
	Sys  float64 `json:"sys_s"`
}

// jsonEngine: fill_bytes_after_last_request is the part of fill_bytes
// written after the last request; it is present when the fill counters
// were read after Close (Result.FillFinal), which also makes fill_bytes,
// fill_waits and fill_errors all that was filled, waited and failed.
type jsonEngine struct {
	Fallocates         *int64   `json:"fallocates,omitempty"`
	ZeroPadBytes       *int64   `json:"zero_pad_bytes,omitempty"`
	COWBytes           *int64   `json:"cow_bytes,omitempty"`
	ClustersAllocated  *int64   `json:"clusters_allocated,omitempty"`
	L2TablesAllocated  *int64   `json:"l2_tables_allocated,omitempty"`
	L2Hits             *int64   `json:"l2_hits,omitempty"`
	L2Misses           *int64   `json:"l2_misses,omitempty"`
	FreshSkips         *int64   `json:"fresh_skips,omitempty"`
	ZeroingRefused     *int64   `json:"zeroing_refused,omitempty"`
	AllocWaits         *int64   `json:"alloc_waits,omitempty"`
	Flushes            *int64   `json:"flushes,omitempty"`
	FillBytes          *int64   `json:"fill_bytes,omitempty"`
	FillWaits          *int64   `json:"fill_waits,omitempty"`
	FillErrors         *int64   `json:"fill_errors,omitempty"`
	FillAfterLast      *int64   `json:"fill_bytes_after_last_request,omitempty"`
	UringEnters        *uint64  `json:"uring_enters,omitempty"`
	UringSQEs          *uint64  `json:"uring_sqes,omitempty"`
	UringSQEsPerEnter  *float64 `json:"uring_sqes_per_enter,omitempty"`
	UringMerged        *uint64  `json:"uring_merged,omitempty"`
	UringReqsPerEnter  *float64 `json:"uring_requests_per_enter,omitempty"`
	UringFixed         *uint64  `json:"uring_fixed,omitempty"`
	HostFallocates     *uint64  `json:"host_fallocates,omitempty"`
	HostFsyncs         *uint64  `json:"host_fsyncs,omitempty"`
	UringEAgain        *uint64  `json:"uring_eagain_resubmits,omitempty"`
	UringMisalignedReq *uint64  `json:"uring_misaligned,omitempty"`
}

type jsonConfig struct {
	File          string     `json:"file"`
	Created       bool       `json:"created"`
	Kept          bool       `json:"kept"`
	Dir           string     `json:"dir,omitempty"`
	Quiet         bool       `json:"quiet"`
	CreateOpts    jsonCreate `json:"create,omitzero"`
	ImageSize     int64      `json:"image_size"`
	ClusterSize   int64      `json:"cluster_size,omitempty"`
	Format        string     `json:"format"`
	Count         int64      `json:"count"`
	Depth         int        `json:"depth"`
	Offset        int64      `json:"offset"`
	Size          int64      `json:"size"`
	Step          int64      `json:"step"`
	Write         bool       `json:"write"`
	Pattern       int        `json:"pattern"`
	FlushInterval int64      `json:"flush_interval"`
	Drain         bool       `json:"drain"`
	Cache         string     `json:"cache"`
	AIO           string     `json:"aio"`
	Queue         bool       `json:"queue,omitempty"`
	Backend       string     `json:"backend,omitempty"`
	BackendReason string     `json:"backend_reason,omitempty"`
	ForceShare    bool       `json:"force_share"`
	EngineOpts    []string   `json:"engine_opts"`
	Prealloc      string     `json:"prealloc"`
	PreallocSize  int64      `json:"prealloc_size"`
	PreallocAlign int64      `json:"prealloc_align"`
	PreallocFill  string     `json:"prealloc_fill"`
	L2CacheSize   int64      `json:"l2_cache_size"`
	L2EntrySize   int        `json:"l2_cache_entry_size"`
	RefcountCache int64      `json:"refcount_cache_size"`
	CleanInterval float64    `json:"cache_clean_interval_s"`
	GOMAXPROCS    int        `json:"gomaxprocs"`
}

// jsonCreate are the create options of an image the run created.
type jsonCreate struct {
	Size          int64  `json:"size,omitempty"`
	ClusterSize   int    `json:"cluster_size,omitempty"`
	Compat        string `json:"compat,omitempty"`
	RefcountBits  int    `json:"refcount_bits,omitempty"`
	LazyRefcounts bool   `json:"lazy_refcounts,omitempty"`
	Preallocation string `json:"preallocation,omitempty"`
	BackingFile   string `json:"backing_file,omitempty"`
	ExtendedL2    bool   `json:"extended_l2,omitempty"`
}

// MarshalJSON encodes the --json object.
func (r *Result) MarshalJSON() ([]byte, error) {
	c := &r.Config
	h := &r.Latency
	usf := func(d time.Duration) float64 { return float64(d) / 1e3 }
	j := jsonResult{
		Requests: r.Requests, BytesPerRequest: r.BytesPerRequest, Depth: r.Depth,
		Seconds: r.Elapsed.Seconds(), IOPS: r.IOPS(), MiBps: r.MiBps(),
		FinalFlushS: r.FinalFlush.Seconds(), Flushes: r.Flushes,
		Lat: jsonLat{P50: usf(h.Quantile(.5)), P90: usf(h.Quantile(.9)), P99: usf(h.Quantile(.99)),
			P999: usf(h.Quantile(.999)), Max: usf(h.Max()), Mean: usf(h.Mean()), Min: usf(h.Min())},
		CPU: jsonCPU{User: r.UserCPU.Seconds(), Sys: r.SysCPU.Seconds()},
	}
	if m := r.Engine; m != nil {
		e := &j.Engine
		e.Fallocates, e.ZeroPadBytes, e.COWBytes = &m.Fallocates, &m.ZeroPadBytes, &m.COWBytes
		e.ClustersAllocated, e.L2TablesAllocated = &m.ClustersAllocated, &m.L2TablesAllocated
		e.L2Hits, e.L2Misses, e.FreshSkips = &m.L2Hits, &m.L2Misses, &m.FreshSkips
		e.ZeroingRefused, e.AllocWaits, e.Flushes = &m.ZeroingRefused, &m.AllocWaits, &m.Flushes
		if m.Prealloc.Fill == qcow2.FillZeroes {
			e.FillBytes, e.FillWaits, e.FillErrors = &m.FillBytes, &m.FillWaits, &m.FillErrors
			if r.FillFinal {
				e.FillAfterLast = &r.FillAfterRun
			}
		}
		p := m.Prealloc
		j.Prealloc = &jsonPrealloc{On: p.On, Ahead: p.Ahead, AheadAlign: p.AheadAlign, Fill: p.Fill, FillReason: p.FillReason}
	}
	if u := r.Uring; u != nil {
		e := &j.Engine
		spe := u.SQEsPerEnter()
		rpe := u.RequestsPerEnter()
		e.UringEnters, e.UringSQEs, e.UringSQEsPerEnter = &u.Enters, &u.SQEs, &spe
		e.UringMerged, e.UringReqsPerEnter, e.UringFixed = &u.Merged, &rpe, &u.Fixed
		e.HostFallocates, e.HostFsyncs = &u.Fallocates, &u.Fsyncs
		e.UringEAgain, e.UringMisalignedReq = &u.EAgainResubmits, &u.Misaligned
	}
	o := &c.Engine
	prealloc := o.Prealloc
	if prealloc == "" {
		prealloc = "on" // the engine's default
	}
	fill := o.PreallocFill
	if fill == "" {
		fill = qcow2.FillAuto
	}
	opts := c.EngineOpts
	if opts == nil {
		opts = []string{}
	}
	j.Config = jsonConfig{
		File: c.File, Created: r.Created != "", Dir: c.Dir, Quiet: c.Quiet, Kept: r.Created != "" && (c.Keep || !r.Seed),
		ImageSize: r.ImageSize, ClusterSize: r.ClusterSize, Format: c.Format, Count: c.Count, Depth: c.Depth, Offset: c.Offset,
		Size: c.Size, Step: c.Step, Write: c.Write, Pattern: int(c.Pattern),
		FlushInterval: c.FlushInterval, Drain: c.FlushInterval > 0 && !c.NoDrain,
		Cache: c.Cache, AIO: c.AIO, Queue: c.Queue, Backend: r.Backend, BackendReason: r.BackendReason, ForceShare: c.ForceShare,
		EngineOpts: opts, Prealloc: prealloc, PreallocSize: o.PreallocSize, PreallocAlign: o.PreallocAlign,
		PreallocFill: fill, L2CacheSize: o.L2CacheSize, L2EntrySize: o.L2CacheEntrySize, RefcountCache: o.RefcountCacheSize,
		CleanInterval: o.CacheCleanInterval.Seconds(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	if r.Created != "" {
		cr := c.Create
		if !r.Seed {
			cr.Size = c.CreateSize
		}
		j.Config.CreateOpts = jsonCreate{Size: cr.Size, ClusterSize: cr.ClusterSize, Compat: cr.Compat,
			RefcountBits: cr.RefcountBits, LazyRefcounts: cr.LazyRefcounts, Preallocation: cr.Preallocation,
			BackingFile: cr.BackingFile, ExtendedL2: cr.ExtendedL2}
	}
	return json.Marshal(j)
}
