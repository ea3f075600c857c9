package bench

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// Defaults, as qemu-img bench's except Count (qemu's 75000 is kept) and the
// seed image.
const (
	DefaultCount       = 75000
	DefaultDepth       = 64
	DefaultSize        = 4096
	SeedImageSize      = 4 << 30
	SeedClusterSize    = 64 << 10
	DirectIOAlignment  = 512
	defaultProgressInt = 250 * time.Millisecond
)

// Config is one benchmark run. The zero value plus a File is qemu-img
// bench's default read test; with File empty Run creates the seed image.
type Config struct {
	// File is the image. Empty: create a fresh SeedImageSize qcow2 with
	// SeedClusterSize clusters in a temporary directory under Dir, run a
	// write test on it with cache none, and delete it unless Keep.
	File string
	Dir  string
	Keep bool
	// CreateSize > 0 creates a fresh image of that size at File first.
	CreateSize int64
	// Create holds image create options (cluster_size, preallocation, ...)
	// for the seed image and CreateSize.
	Create qcow2.CreateOptions

	Format string // qcow2, raw, or "" to probe
	Count  int64  // requests (default DefaultCount)
	Depth  int    // requests in flight (default DefaultDepth)
	Offset int64  // first offset
	Size   int64  // bytes per request (default DefaultSize)
	Step   int64  // offset increment; 0 or negative: Size (qemu-img 7.2's step ?: bufsize)
	// Random sends request i to a pseudo-random offset drawn from RandSeed
	// and i (so a second run with the same seed revisits the same
	// offsets), aligned to Size from Offset, instead of qemu's
	// Offset+i*Step. Off by default: qemu-img semantics.
	Random        bool
	RandSeed      uint64
	Write         bool
	Pattern       byte
	FlushInterval int64 // flush every N requests (writes only; >= Depth)
	NoDrain       bool  // flush without pausing the other workers
	// Queue runs the requests through a block.Queue from one goroutine
	// (submit a batch, reap a batch) instead of Depth goroutines each
	// issuing synchronous requests: qring's asynchronous API.
	Queue bool
	// Cache is qemu's -t (none, writeback, writethrough, directsync,
	// unsafe); "" means writeback, or none for the seed image.
	Cache string
	// AIO is io_uring, io_uring-nomerge or threads. An explicit io_uring
	// fails where no ring can be set up; "" (the default, recorded as
	// io_uring) falls back to threads there, and Result.Backend and
	// BackendReason say so.
	AIO string
	// ForceShare is qemu's -U: a read test shares the image with a
	// process writing it (qcow2.Options.ForceShare); with -w it is an
	// error, as in QEMU.
	ForceShare bool

	// Engine are the image's open options (prealloc, caches, ...);
	// EngineOpts are the name=value strings they came from, for the record.
	Engine     qcow2.Options
	EngineOpts []string

	// Out receives the qemu-img style lines; nil discards them. Quiet
	// drops all but "Run completed", like qemu-img -q.
	Out   io.Writer
	Quiet bool
	// Warn receives QEMU's warning for a writable raw image whose format
	// was probed (imgopen.Opened.GuardProbed); nil discards it.
	Warn io.Writer
	// Progress, if set, is called about every ProgressInterval from a
	// separate goroutine while requests run.
	Progress         func(done, total int64, elapsed time.Duration)
	ProgressInterval time.Duration

	// SeedDir, if set, is called with the temporary directory of a seed
	// image that is not kept, as soon as it exists and before the image is
	// created in it: a command removes it when a signal ends the run (Run
	// removes it when it returns).
	SeedDir func(dir string)

	// aioDefault: Resolve filled in AIO (see OpenAIO).
	aioDefault bool
}

// OpenAIO is the AIO to open the image with (imgopen.Spec.AIO): "" when
// AIO was left to its default, so that the default's fallback to threads
// applies, else AIO.
func (c *Config) OpenAIO() string {
	if c.aioDefault {
		return ""
	}
	return c.AIO
}

// Seed reports whether the run creates its own temporary image.
func (c *Config) Seed() bool { return c.File == "" }

// Resolve fills in defaults and checks the settings. Run calls it; callers
// may call it first to validate before doing anything else.
func (c *Config) Resolve() error {
	if c.Count == 0 {
		c.Count = DefaultCount
	}
	if c.Depth == 0 {
		c.Depth = DefaultDepth
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Step <= 0 {
		c.Step = c.Size
	}
	if c.Seed() {
		c.Write = true
		if c.Format == "" {
			c.Format = "qcow2"
		}
		if c.Cache == "" {
			c.Cache = "none"
		}
		if c.Create.Size == 0 {
			c.Create.Size = SeedImageSize
		}
		if c.Create.ClusterSize == 0 {
			c.Create.ClusterSize = SeedClusterSize
		}
	}
	if c.Cache == "" {
		c.Cache = "writeback"
	}
	if c.AIO == "" {
		c.AIO, c.aioDefault = "io_uring", true
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = defaultProgressInt
	}
	switch {
	case c.Count < 0:
		return fmt.Errorf("invalid request count %d", c.Count)
	case c.Depth < 1:
		return fmt.Errorf("invalid queue depth %d (must be at least 1)", c.Depth)
	case c.Depth >= block.MaxQueueDepth:
		// One slot more for the flusher (run.go).
		return fmt.Errorf("invalid queue depth %d (at most %d)", c.Depth, block.MaxQueueDepth-1)
	case c.Size <= 0 || c.Size > 1<<30:
		return fmt.Errorf("invalid request size %d", c.Size)
	case c.Offset < 0:
		return fmt.Errorf("invalid offset %d", c.Offset)
	case c.FlushInterval < 0:
		return fmt.Errorf("invalid flush interval %d", c.FlushInterval)
	case c.FlushInterval > 0 && !c.Write:
		return errors.New("--flush-interval is only available in write tests")
	case c.FlushInterval > 0 && c.FlushInterval < int64(c.Depth):
		return errors.New("flush interval can't be smaller than depth")
	case c.NoDrain && c.FlushInterval == 0:
		return errors.New("--no-drain requires --flush-interval")
	case c.Pattern != 0 && !c.Write:
		return errors.New("--pattern is only available in write tests")
	case c.CreateSize < 0:
		return fmt.Errorf("invalid image size %d", c.CreateSize)
	case c.CreateSize > 0 && c.Seed():
		return errors.New("--create needs a FILE")
	}
	switch c.Format {
	case "", "qcow2", "raw":
	default:
		return fmt.Errorf("unknown format %q (qcow2, raw)", c.Format)
	}
	switch c.Cache {
	case "none", "directsync":
		if c.Size%DirectIOAlignment != 0 {
			return fmt.Errorf("request size %d is not a multiple of %d, which -t %s (O_DIRECT) needs", c.Size, DirectIOAlignment, c.Cache)
		}
	case "writeback", "writethrough", "unsafe":
	default:
		return fmt.Errorf("invalid cache mode %q (none, writeback, writethrough, directsync, unsafe)", c.Cache)
	}
	switch c.AIO {
	case "io_uring", "io_uring-nomerge", "threads":
	case "native":
		return imgopen.ErrNativeAIO
	default:
		return fmt.Errorf("invalid aio %q (io_uring, io_uring-nomerge, threads)", c.AIO)
	}
	return nil
}

// flushEachWrite: writethrough and directsync complete a write only once it
// is durable (qemu sets FUA, emulated by a flush).
func (c *Config) flushEachWrite() bool {
	return c.Write && (c.Cache == "writethrough" || c.Cache == "directsync")
}

// firstFlush is where the interval flushes start (W2): the first p at or
// after the first completion (depth requests sent) with count-p a
// multiple of the interval; count when there is none before the end.
func (c *Config) firstFlush() uint64 {
	n, fi := uint64(c.Count), uint64(c.FlushInterval)
	lo := min(uint64(c.Depth), n)
	return lo + (n-lo)%fi
}

// flushAfter reports whether an interval flush comes after done requests
// (W2; the one after the last is the final flush).
func (c *Config) flushAfter(done uint64) bool {
	if c.FlushInterval <= 0 || done >= uint64(c.Count) {
		return false
	}
	first := c.firstFlush()
	return done >= first && (done-first)%uint64(c.FlushInterval) == 0
}

// flushesUpTo is how many interval flushes come after p requests for
// some p <= i: drained, request i starts once they returned (W2).
func (c *Config) flushesUpTo(i uint64) uint64 {
	if c.FlushInterval <= 0 {
		return 0
	}
	first := c.firstFlush()
	if i < first {
		return 0
	}
	return (min(i, uint64(c.Count)-1)-first)/uint64(c.FlushInterval) + 1
}

// noFlush: cache=unsafe ignores flushes (BDRV_O_NO_FLUSH).
func (c *Config) noFlush() bool { return c.Cache == "unsafe" }
