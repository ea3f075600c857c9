package bench

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// offsetOf returns the offset of request i with qemu 7.2's wrap: the first
// request goes to first, each next one to (previous + step) % size.
func offsetOf(first, step, size int64, i uint64) int64 {
	if i == 0 || size <= 0 {
		return first
	}
	s := uint64(size)
	// (first + i*step) % size, without overflow for any count.
	hi, lo := bits.Mul64(i, uint64(step)%s)
	r := bits.Rem64(hi, lo, s)
	return int64((r + uint64(first)%s) % s)
}

// randOffset is request i's offset in a Random run: a slot of reqSize
// bytes in [first, size), from a splitmix64 hash of seed and i (no state
// shared between workers, no allocation).
func randOffset(seed uint64, i uint64, first, size, reqSize int64) int64 {
	slots := (size - first) / reqSize
	if slots <= 0 {
		return first
	}
	z := seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return first + int64(z%uint64(slots))*reqSize
}

// Run prepares the image Config describes (creating it if asked), runs the
// benchmark on it, flushes and closes it, and removes a temporary seed image
// unless Keep.
func Run(cfg Config) (res Result, err error) {
	if err := cfg.Resolve(); err != nil {
		return res, err
	}
	out := lineWriter{cfg.Out}
	path := cfg.File
	if cfg.Seed() {
		dir, err := os.MkdirTemp(cfg.Dir, "qbench-")
		if err != nil {
			return res, err
		}
		path = filepath.Join(dir, "seed.qcow2")
		if !cfg.Keep {
			defer os.RemoveAll(dir)
			if cfg.SeedDir != nil {
				cfg.SeedDir(dir)
			}
		}
		if err := createImage(path, cfg.Format, cfg.Create); err != nil {
			return res, err
		}
		res.Created = path
		if !cfg.Quiet {
			kept := "deleted afterwards"
			if cfg.Keep {
				kept = "kept"
			}
			cs := ""
			if cfg.Format != "raw" {
				cs = fmt.Sprintf(", cluster size %d", cfg.Create.ClusterSize)
			}
			out.printf("Created %s image %s, %d bytes%s (%s)\n", cfg.Format, path, cfg.Create.Size, cs, kept)
		}
	} else if cfg.CreateSize > 0 {
		c := cfg.Create
		c.Size = cfg.CreateSize
		f := cfg.Format
		if f == "" {
			f = "qcow2"
			cfg.Format = f
		}
		if err := createImage(path, f, c); err != nil {
			return res, err
		}
		res.Created = path
		if !cfg.Quiet {
			out.printf("Created %s image %s, %d bytes\n", f, path, c.Size)
		}
	}

	img, err := openImage(path, &cfg)
	if err != nil {
		return res, err
	}
	created := res.Created
	res, err = RunOn(img, cfg)
	res.Created = created
	res.Seed = cfg.Seed()
	res.Config.File = path
	// Close is outside the timed run, as qemu-img's blk_unref after the
	// "Run completed" line.
	if cerr := img.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	// The fill workers ran until Close: count what they wrote.
	res.Closed(img.Image)
	return res, err
}

// createImage makes qbench's fresh image as qimg create would: through
// the io_uring file, so that it gets qemu-img's extent size hint (1 MiB
// unless c.Hints says otherwise; XFS allocates the file in extents of
// it), as every image qemu-img creates has. Through the portable
// default opener it got none, and on XFS was laid out unlike the
// images of qemu-img create the perf scripts compare on.
func createImage(path, format string, c qcow2.CreateOptions) error {
	if err := c.Hints.Check(); err != nil {
		return err
	}
	if format == "raw" {
		f, err := uring.Open(path, uring.Options{Create: true, Perm: 0o644, Backend: uring.Threads})
		if err != nil {
			return err
		}
		err = f.Truncate(0)
		if err == nil {
			c.Hints.Apply(f) // while the file is empty, as QEMU's file driver
			err = f.Truncate(c.Size)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if c.Opener == nil {
		op, err := imgopen.Opener("writeback", "")
		if err != nil {
			return err
		}
		c.Opener = op
	}
	if err := qcow2.Create(path, c); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// openImage opens path for the run (read-only for a read test) and
// records the probed format in cfg.
func openImage(path string, cfg *Config) (*imgopen.Opened, error) {
	name := path
	path, err := protocol.Path(path, false) // "file:x" is x, as for qemu-img bench
	if err != nil {
		return nil, fmt.Errorf("Could not open '%s': %w", name, err)
	}
	eo := cfg.Engine
	eo.ForceShare = eo.ForceShare || cfg.ForceShare
	spec := imgopen.Spec{Path: path, Format: cfg.Format, ReadOnly: !cfg.Write,
		Cache: cfg.Cache, AIO: cfg.OpenAIO(), Opts: eo, WrapFile: testHookHostDev}
	var img *imgopen.Opened
	if imgopen.IsNBDName(path) {
		// An NBD export, as qemu-img bench opens one (its format
		// probed unless given).
		img, err = imgopen.OpenSpec(imgopen.NBDSpec(path, ""), spec)
	} else if _, err = os.Stat(path); err != nil {
		return nil, &openError{name, imgopen.FileOpenError(path, err)}
	} else {
		img, err = imgopen.Open(spec)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			err = imgopen.FileOpenError(path, err)
		}
		return nil, &openError{name, err}
	}
	cfg.Format = img.Format()
	if cfg.Write && img.Image != nil && img.Image.ReadOnly() {
		img.Close()
		return nil, fmt.Errorf("%s: %w (corrupt or opened read-only)", path, qcow2.ErrReadOnly)
	}
	if cfg.Write {
		img.GuardProbed(cfg.Warn) // as qemu-img bench -w: QEMU's raw restriction
	}
	return img, nil
}

// openError is a failure to open the image, in qemu-img bench's words:
// "Could not open 'NAME': " and QEMU's message for the fault.
type openError struct {
	name string
	err  error
}

func (e *openError) Error() string {
	return fmt.Sprintf("Could not open '%s': %s", e.name, qcow2.QemuText(e.err))
}

func (e *openError) Unwrap() error { return e.err }

// testHookHostDev, if set, wraps the host file of the image Run opens
// (imgopen.Spec.WrapFile: tests slow down or count its requests).
var testHookHostDev func(block.Device) block.Device

// worker is one queue slot: its own buffer, vector and histogram.
type worker struct {
	r    *runner
	vec  [][]byte
	hist Histogram
}

// runner is the shared state of one run.
type runner struct {
	cfg     *Config
	dev     block.Device
	size    int64 // image size, for the offset wrap
	next    atomic.Uint64
	done    atomic.Uint64
	flushes atomic.Int64
	failed  atomic.Bool
	errOnce sync.Once
	err     error

	// Drained flushes (W2): request i may start once flushed >= i/N.
	flushed atomic.Uint64
	mu      sync.Mutex
	cond    sync.Cond
}

func (r *runner) fail(err error) {
	r.errOnce.Do(func() { r.err = err })
	r.failed.Store(true)
	r.mu.Lock()
	r.cond.Broadcast()
	r.mu.Unlock()
}

// RunOn runs the benchmark on img.Dev; img.Image (nil for raw) and
// img.File (nil if unknown) serve only for metrics. It flushes a write run
// at the end but does not close img. cfg.Seed and the create settings are
// ignored.
func RunOn(img *imgopen.Opened, cfg Config) (Result, error) {
	dev, im, file := img.Dev, img.Image, img.File
	if cfg.File == "" {
		cfg.File = "-" // a device, not a seed run
	}
	if err := cfg.Resolve(); err != nil {
		return Result{}, err
	}
	size, err := dev.Size()
	if err != nil {
		return Result{}, err
	}
	if err := fits(&cfg, size); err != nil {
		return Result{}, err
	}
	out := lineWriter{cfg.Out}
	dir := "read"
	if cfg.Write {
		dir = "write"
	}
	if !cfg.Quiet {
		out.printf("Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n",
			cfg.Count, dir, cfg.Size, cfg.Depth, cfg.Offset, cfg.Step)
		if cfg.Random {
			out.printf("Random offsets (seed %d)\n", cfg.RandSeed)
		}
		if cfg.FlushInterval > 0 {
			out.printf("Sending flush every %d requests\n", cfg.FlushInterval)
		}
	}

	r := &runner{cfg: &cfg, dev: dev, size: size}
	r.cond.L = &r.mu
	var q block.Queue
	if cfg.Queue {
		// One more than Depth: a flush without drain goes in beside
		// Depth requests.
		if q, err = block.NewQueue(dev, cfg.Depth+1); err != nil {
			return Result{}, err
		}
		defer q.Close()
	}
	ws := make([]*worker, cfg.Depth)
	if cfg.Queue {
		ws = nil
	}
	for i := range ws {
		ws[i] = &worker{r: r, vec: [][]byte{patternBuf(int(cfg.Size), cfg.Pattern)}}
	}

	var m0 qcow2.Metrics
	if im != nil {
		m0 = im.Metrics()
	}
	var u0 uring.Metrics
	if file != nil {
		u0 = file.Metrics()
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)

	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	start := time.Now()
	if cfg.Progress != nil {
		progressDone.Go(func() {
			t := time.NewTicker(cfg.ProgressInterval)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					cfg.Progress(int64(r.done.Load()), cfg.Count, time.Since(start))
				}
			}
		})
	}
	var qr *queueRunner
	if cfg.Queue {
		qr = newQueueRunner(r, q, cfg.Pattern)
		if err := qr.run(); err != nil {
			r.fail(err)
		}
	} else {
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Go(func() {
				w.loop()
			})
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	// The fill goes on after the last request (until Close): note where
	// it was, to tell the part after it (Result.Closed).
	var fillEnd int64
	if im != nil {
		fillEnd = im.Metrics().FillBytes
	}
	close(stopProgress)
	progressDone.Wait()
	if cfg.Progress != nil && r.err == nil {
		cfg.Progress(int64(r.done.Load()), cfg.Count, elapsed)
	}
	if r.err != nil {
		return Result{}, r.err
	}
	// qemu prints this with printf, not qprintf: shown even with -q.
	out.printf("Run completed in %.3f seconds.\n", elapsed.Seconds())

	// qemu-img bench flushes when it closes the image; outside the timed run.
	var finalFlush time.Duration
	if cfg.Write && !cfg.noFlush() {
		t0 := time.Now()
		if err := dev.Flush(); err != nil {
			return Result{}, fmt.Errorf("final flush: %w", err)
		}
		finalFlush = time.Since(t0)
	}

	res := Result{
		Config:          cfg,
		Requests:        cfg.Count,
		BytesPerRequest: cfg.Size,
		Depth:           cfg.Depth,
		Elapsed:         elapsed,
		FinalFlush:      finalFlush,
		Flushes:         r.flushes.Load(),
		UserCPU:         tvDur(ru1.Utime) - tvDur(ru0.Utime),
		SysCPU:          tvDur(ru1.Stime) - tvDur(ru0.Stime),
		ImageSize:       size,
		engine0:         m0,
		fillEnd:         fillEnd,
	}
	for _, w := range ws {
		res.Latency.Merge(&w.hist)
	}
	if qr != nil {
		res.Latency.Merge(&qr.hist)
	}
	if im != nil {
		m := im.Metrics().Sub(m0)
		res.Engine = &m
		res.ClusterSize = int64(im.Geometry().ClusterSize)
	}
	if file != nil && file.Backend() != uring.Threads {
		u := file.Metrics().Sub(u0)
		res.Uring = &u
	}
	res.Backend, res.BackendReason = img.Backend()
	if file != nil {
		res.Zeroing = file.Zeroing()
		res.RingFeatures = file.RingFeatures()
	}
	return res, nil
}

// fits refuses, before any request, a run whose first request would not
// lie within the image: qemu-img would send them and fail each with EIO.
func fits(cfg *Config, size int64) error {
	switch {
	case cfg.Offset >= size:
		return fmt.Errorf("start offset %d is at or past the end of the image (%d bytes)", cfg.Offset, size)
	case cfg.Offset+cfg.Size > size:
		return fmt.Errorf("image too small: a request of %d bytes at offset %d ends past the end of the image (%d bytes)",
			cfg.Size, cfg.Offset, size)
	}
	return nil
}

func tvDur(tv syscall.Timeval) time.Duration {
	return time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond
}

func (w *worker) loop() {
	r := w.r
	n := uint64(r.cfg.Count)
	for !r.failed.Load() {
		i := r.next.Add(1) - 1
		if i >= n {
			return
		}
		if err := w.one(i); err != nil {
			r.fail(err)
			return
		}
	}
}

// one issues request i and records its latency. It must not allocate (W1).
func (w *worker) one(i uint64) error {
	r := w.r
	cfg := r.cfg
	fi := uint64(cfg.FlushInterval)
	drain := fi > 0 && !cfg.NoDrain
	if drain && r.flushed.Load() < cfg.flushesUpTo(i) {
		r.mu.Lock()
		for r.flushed.Load() < cfg.flushesUpTo(i) && !r.failed.Load() {
			r.cond.Wait()
		}
		r.mu.Unlock()
		if r.failed.Load() {
			return nil
		}
	}
	off := offsetOf(cfg.Offset, cfg.Step, r.size, i)
	if cfg.Random {
		off = randOffset(cfg.RandSeed, i, cfg.Offset, r.size, cfg.Size)
	}
	if off+cfg.Size > r.size {
		// A raw file would grow (write) or read short: fail as qemu-img's
		// block layer does (EIO), for every format alike.
		return &RequestError{Offset: off, Len: cfg.Size, Write: cfg.Write, Err: pastEnd(r.size)}
	}
	t0 := time.Now()
	var err error
	if cfg.Write {
		err = r.dev.Writev(off, w.vec)
		if err == nil && cfg.flushEachWrite() {
			err = r.dev.Flush()
		}
	} else {
		err = r.dev.Readv(off, w.vec)
	}
	w.hist.Record(time.Since(t0))
	if err != nil {
		return &RequestError{Offset: off, Len: cfg.Size, Write: cfg.Write, Err: err}
	}
	d := r.done.Add(1)
	if cfg.flushAfter(d) {
		// With drain every request < d has completed and none >= d has
		// started, so this flush covers exactly the first d requests.
		if !cfg.noFlush() {
			if err := r.dev.Flush(); err != nil {
				return fmt.Errorf("flush after %d requests: %w", d, err)
			}
		}
		r.flushes.Add(1)
		if drain {
			r.mu.Lock()
			r.flushed.Store(cfg.flushesUpTo(d))
			r.cond.Broadcast()
			r.mu.Unlock()
		}
	}
	return nil
}

// RequestError is a failed benchmark request (qemu-img's "Failed request").
type RequestError struct {
	Offset, Len int64
	Write       bool
	Err         error
}

func (e *RequestError) Error() string {
	op := "read"
	if e.Write {
		op = "write"
	}
	return fmt.Sprintf("failed request: %s of %d bytes at offset %d: %v", op, e.Len, e.Offset, e.Err)
}

func (e *RequestError) Unwrap() error { return e.Err }

// pastEnd is the error of a request that would end past the end of an
// image of size bytes (offsets wrap at the image size, as in qemu-img 7.2,
// so a request near the end may run past it): qemu-img bench fails it
// with EIO ("Failed request: Input/output error").
func pastEnd(size int64) error {
	return fmt.Errorf("request ends past the end of the image (%d bytes): %w", size, syscall.EIO)
}

type lineWriter struct{ w io.Writer }

func (l lineWriter) printf(format string, a ...any) {
	if l.w != nil {
		fmt.Fprintf(l.w, format, a...)
	}
}
