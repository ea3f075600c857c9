package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/latdev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/uring"
)

// tstats are what one torture case saw. They are printed as one
// "TORTURE-STATS {json}" line and summed by TestTortureLoop.
type tstats struct {
	Cases, Ops, Writes, Zeroes, Discards, Flushes, Reads, Reopens int64
	Grows, GrowSkips, Shrinks, Skipped, Batches, BatchOps, Checks int64
	Regrows, RegrowSkips                                          int64 // regrow episodes' shrinks done and skipped (genRegrow)
	Snapshots, SnapApplies, SnapDeletes, SnapSkips                int64 // opSnap (torture_snap_test.go)
	Compressed                                                    int64 // clusters written compressed (compress_torture_test.go)
	// Inside batches (torture_resize_test.go): grow-and-shrink episodes
	// done and refused, the tail writer's writes done and cut, snapshots
	// created and deleted, and refused.
	BatchResizes, BatchResizeSkips, BatchTailWrites, BatchTailCut, BatchSnaps, BatchSnapSkips int64
	ZeroAllocs, ZeroAllocRefused                                                              int64 // zeroings with Allocate done and refused (zeroAllocate)
	BatchZeroAllocs, BatchZeroAllocRefused, BatchZeroAllocPartial                             int64 // the same inside batches, and refused part-way (torture_zeroalloc_test.go)
	BatchAmends, BatchAmendSkips                                                              int64 // refcount width changes inside batches done and refused
	// Engine metrics, summed over every open of the image.
	EarlyWrites, FillBytes, FillWaits, Reservations, Refblocks  int64
	ReftableGrowths, L2Tables, Clusters, AllocWaits, FreshSkips int64
	Fallocates, COWBytes, ZeroPadBytes, RunClusters             int64
	Merged                                                      int64 // uring Metrics().Merged
	QueueFast, QueueAlloc, QueueSlow                            int64 // queued requests by path (Q14, Q16)
	RYWChecks                                                   int64 // read-your-writes checks in batches
	RYWViolations                                               int64 // tolerated (-torture.tolerate=ryw)
	Events                                                      map[string]int64
	Crash                                                       map[string]int64 // crash clones verified, by kind
	CrashQemu                                                   int64            // of which also qemu-img checked
}

func newTstats() *tstats {
	return &tstats{Events: map[string]int64{}, Crash: map[string]int64{}}
}

func (s *tstats) add(o *tstats) {
	s.Cases += o.Cases
	s.Ops += o.Ops
	s.Writes += o.Writes
	s.Zeroes += o.Zeroes
	s.Discards += o.Discards
	s.Flushes += o.Flushes
	s.Reads += o.Reads
	s.Reopens += o.Reopens
	s.Grows += o.Grows
	s.GrowSkips += o.GrowSkips
	s.Shrinks += o.Shrinks
	s.Regrows += o.Regrows
	s.RegrowSkips += o.RegrowSkips
	s.Snapshots += o.Snapshots
	s.SnapApplies += o.SnapApplies
	s.SnapDeletes += o.SnapDeletes
	s.SnapSkips += o.SnapSkips
	s.Skipped += o.Skipped
	s.Batches += o.Batches
	s.BatchOps += o.BatchOps
	s.Checks += o.Checks
	s.Compressed += o.Compressed
	s.BatchResizes += o.BatchResizes
	s.BatchResizeSkips += o.BatchResizeSkips
	s.BatchTailWrites += o.BatchTailWrites
	s.BatchTailCut += o.BatchTailCut
	s.BatchSnaps += o.BatchSnaps
	s.BatchSnapSkips += o.BatchSnapSkips
	s.ZeroAllocs += o.ZeroAllocs
	s.BatchAmends += o.BatchAmends
	s.BatchAmendSkips += o.BatchAmendSkips
	s.ZeroAllocRefused += o.ZeroAllocRefused
	s.BatchZeroAllocs += o.BatchZeroAllocs
	s.BatchZeroAllocRefused += o.BatchZeroAllocRefused
	s.BatchZeroAllocPartial += o.BatchZeroAllocPartial
	s.EarlyWrites += o.EarlyWrites
	s.RunClusters += o.RunClusters
	s.FillBytes += o.FillBytes
	s.FillWaits += o.FillWaits
	s.Reservations += o.Reservations
	s.Refblocks += o.Refblocks
	s.ReftableGrowths += o.ReftableGrowths
	s.L2Tables += o.L2Tables
	s.Clusters += o.Clusters
	s.AllocWaits += o.AllocWaits
	s.FreshSkips += o.FreshSkips
	s.Fallocates += o.Fallocates
	s.COWBytes += o.COWBytes
	s.ZeroPadBytes += o.ZeroPadBytes
	s.Merged += o.Merged
	s.QueueFast += o.QueueFast
	s.QueueAlloc += o.QueueAlloc
	s.QueueSlow += o.QueueSlow
	s.RYWChecks += o.RYWChecks
	s.RYWViolations += o.RYWViolations
	s.CrashQemu += o.CrashQemu
	for k, v := range o.Events {
		s.Events[k] += v
	}
	for k, v := range o.Crash {
		s.Crash[k] += v
	}
}

func (s *tstats) addMetrics(m Metrics) {
	s.EarlyWrites += m.EarlyWrites
	s.RunClusters += m.RunClusters
	s.FillBytes += m.FillBytes
	s.FillWaits += m.FillWaits
	s.Reservations += m.Reservations
	s.Refblocks += m.RefblocksAllocated
	s.ReftableGrowths += m.ReftableGrowths
	s.L2Tables += m.L2TablesAllocated
	s.Clusters += m.ClustersAllocated
	s.AllocWaits += m.AllocWaits
	s.FreshSkips += m.FreshSkips
	s.Fallocates += m.Fallocates
	s.COWBytes += m.COWBytes
	s.ZeroPadBytes += m.ZeroPadBytes
	s.QueueFast += m.QueueFast
	s.QueueAlloc += m.QueueAlloc
	s.QueueSlow += m.QueueSlow
}

func mapString(m map[string]int64) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for i, k := range ks {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

func (s *tstats) String() string {
	var crash int64
	for _, v := range s.Crash {
		crash += v
	}
	return fmt.Sprintf("%d cases, %d ops (%d writes, %d zeroes, %d discards, %d flushes, %d reads, %d reopens, %d grows + %d skipped as unsupported, %d shrinks (%d regrow episodes, %d skipped), %d ops past the size skipped, %d batches of %d concurrent ops with %d read-your-writes checks (%d tolerated violations), %d checks, snapshots %d taken, %d applied, %d deleted, %d refused as unsupported)\n"+
		"engine: %d early writes, %d fill bytes (%d fill waits), %d reserve renewals, %d refcount blocks, %d reftable growths, %d L2 tables, %d clusters (%d in runs), %d alloc waits, %d fresh skips, %d fallocates, %d COW bytes, %d zero-pad bytes; uring merged %d; queued %d fast, %d allocated, %d slow\n"+
		"in batches: %d resizes (%d refused), %d tail writes (%d cut), %d snapshots (%d refused), %d refcount width changes (%d refused), %d zeroings with Allocate (%d refused, %d part-way); sequential: %d zeroings with Allocate (%d refused)\n"+
		"events seen: %s\n"+
		"crash points verified: %d (%s); %d also qemu-img checked",
		s.Cases, s.Ops, s.Writes, s.Zeroes, s.Discards, s.Flushes, s.Reads, s.Reopens, s.Grows, s.GrowSkips, s.Shrinks, s.Regrows, s.RegrowSkips, s.Skipped, s.Batches, s.BatchOps, s.RYWChecks, s.RYWViolations, s.Checks, s.Snapshots, s.SnapApplies, s.SnapDeletes, s.SnapSkips,
		s.EarlyWrites, s.FillBytes, s.FillWaits, s.Reservations, s.Refblocks, s.ReftableGrowths, s.L2Tables, s.Clusters, s.RunClusters, s.AllocWaits, s.FreshSkips, s.Fallocates, s.COWBytes, s.ZeroPadBytes, s.Merged, s.QueueFast, s.QueueAlloc, s.QueueSlow,
		s.BatchResizes, s.BatchResizeSkips, s.BatchTailWrites, s.BatchTailCut, s.BatchSnaps, s.BatchSnapSkips, s.BatchAmends, s.BatchAmendSkips, s.BatchZeroAllocs, s.BatchZeroAllocRefused, s.BatchZeroAllocPartial, s.ZeroAllocs, s.ZeroAllocRefused,
		mapString(s.Events), crash, mapString(s.Crash), s.CrashQemu)
}

// trun is one torture case: a seed's op sequence under one configuration.
type trun struct {
	t    *testing.T
	cfg  tcfg
	seed uint64
	p    tgenParams
	dir  string
	st   *tstats

	size  int64
	model []byte
	bdata []byte
	bdev  block.Device // the backing data (memdev backends, and the v2 discard model)
	qb    tqback       // qback: the qcow2 backing file (torture_qback_test.go)

	// memdev backends
	mem *memdev.Dev
	hd  *holddev.Dev
	dev block.Device
	df  tdataFile // df: the external data file (torture_datafile_test.go)
	// file backends
	path    string
	filesMu sync.Mutex
	files   []*uring.File

	im      *Image
	base    Options // the configuration's options
	o       Options // the options of the current open
	reopens int
	rng     *rand.Rand // delays (holddev)
	rngMu   sync.Mutex
	jitter  atomic.Bool // delays on (concurrent phases)
	dumped  bool

	// Crash clones (memdev backends): what a crash may not lose.
	cmu     sync.Mutex
	flushed []byte // guest view at the last completed Flush
	touched []bool // sectors a concurrent phase or an admin op wrote since (any value allowed after a crash)
	// held: for a sector the sequential ops wrote since the flush, every
	// value they gave it (torture_held_test.go): a crash may show any of
	// them, or the flushed one, byte by byte, never bytes it never held.
	held       map[int64][][]byte
	crng       *rand.Rand
	seen       map[string]int
	perKind    int // crash clones per kind
	clones     int
	crashOff   bool
	crashFails int
	evMu       sync.Mutex

	bmBase []byte // the contents when the bitmap was last cleared (torture_bitmap_test.go)

	snaps  []tsnap // internal snapshots taken (torture_snap_test.go)
	snapN  int
	inSnap bool // a snapshot operation is running (under cmu)
}

// tortureKeepRoot is where case directories go (kept on failure).
func tortureKeepRoot() string {
	if *tortureKeep != "" {
		return *tortureKeep
	}
	return filepath.Join(os.TempDir(), "qring-torture")
}

func reproCmd(seed uint64, cfg tcfg, p tgenParams) string {
	s := fmt.Sprintf("go test -count=1 -run 'TestTorture$' ./qcow2 -torture.seed=%d -torture.config=%s", seed, cfg)
	d := defaultGenParams()
	if p.ops != d.ops {
		s += fmt.Sprintf(" -torture.ops=%d", p.ops)
	}
	if p.size != d.size {
		s += fmt.Sprintf(" -torture.size=%s", sizeTok(p.size))
	}
	return s
}

func defaultGenParams() tgenParams {
	return tgenParams{size: 32 << 20, maxSize: 64 << 20, ops: 400, batchOps: 40}
}

// runTorture runs one case and returns its stats.
func runTorture(t *testing.T, seed uint64, cfg tcfg, p tgenParams, crashPerKind int) *tstats {
	// Removed when the case passes, kept when it fails; the cleanup below
	// runs first and dumps a memdev image into it.
	dir := testkit.KeepDir(t, tortureKeepRoot(), fmt.Sprintf("s%d-%s-", seed, cfg))
	r := &trun{t: t, cfg: cfg, seed: seed, p: p, dir: dir, st: newTstats(), perKind: crashPerKind,
		rng:  rand.New(rand.NewPCG(seed, 3)),
		crng: rand.New(rand.NewPCG(seed, 4)),
		seen: map[string]int{}, held: map[int64][][]byte{}}
	r.st.Cases = 1
	t.Cleanup(func() {
		if r.im != nil {
			r.im.Close()
		}
		r.qbClose()
		if !t.Failed() {
			return
		}
		r.dump()
		t.Logf("TORTURE-FAIL image kept in %s", dir)
		t.Logf("TORTURE-FAIL reproduce: %s", reproCmd(seed, cfg, p))
	})
	t.Logf("torture seed %d config %s (%d ops, %d MiB); reproduce: %s", seed, cfg, p.ops, p.size>>20, reproCmd(seed, cfg, p))
	ops := genOps(seed, p)
	r.setup()
	for i, o := range ops {
		r.exec(i, o)
		if t.Failed() {
			t.FailNow()
		}
		if i%25 == 24 {
			r.check(fmt.Sprintf("after op %d", i))
		}
	}
	r.finish()
	return r.st
}

func (r *trun) fatalf(f string, a ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d config %s: "+f, append([]any{r.seed, r.cfg}, a...)...)
}

// dump writes the memdev image to the case directory (qemu-img and a
// kept failure need a file).
func (r *trun) dump() string {
	if r.mem == nil {
		return r.path
	}
	p := filepath.Join(r.dir, "image.qcow2")
	if err := r.mem.WriteFile(p); err != nil {
		r.t.Errorf("dump: %v", err)
	}
	r.dfDump(r.df.mem)
	return p
}

func (r *trun) setup() {
	cfg := r.cfg
	r.size = r.p.size
	r.model = make([]byte, r.size)
	co := cfg.createOptions(r.size)
	r.dfCreateOptions(&co)
	if cfg.bqcow {
		r.qbSetup(&co)
	} else if cfg.backing {
		r.bdata = make([]byte, r.size/2+12345) // shorter than the image
		fillPattern(r.bdata, r.seed^0xbacc)
		copy(r.model, r.bdata)
		bp := filepath.Join(r.dir, "backing.raw")
		if err := os.WriteFile(bp, r.bdata, 0o644); err != nil {
			r.fatalf("%v", err)
		}
		r.bdev = memdev.FromBytes(r.bdata, memdev.Options{})
		co.BackingFile, co.BackingFormat = bp, "raw"
	}
	r.flushed = append([]byte(nil), r.model...)
	r.touched = make([]bool, (r.size+crashSector-1)/crashSector)
	r.base = cfg.options()
	if cfg.memBacked() {
		if cfg.preallocated() {
			// Preallocation needs Create (a file): create, then load.
			p := filepath.Join(r.dir, "create.qcow2")
			if err := Create(p, co); err != nil {
				r.fatalf("create: %v", err)
			}
			r.checkReserved(p)
			b, err := os.ReadFile(p)
			if err != nil {
				r.fatalf("%v", err)
			}
			os.Remove(p)
			r.mem = memdev.FromBytes(b, cfg.memDevOptions())
		} else {
			r.mem = memdev.New(cfg.memDevOptions())
			if err := CreateDevice(r.mem, co); err != nil {
				r.fatalf("create: %v", err)
			}
		}
		if c := r.mem.Caps(); c.ZeroFlags&block.Allocate == 0 {
			r.fatalf("memdev does not advertise Allocate: the fast paths would not run")
		}
		ho := holddev.Options{NoClose: true, Before: r.devHook}
		if cfg.backend == "hold" {
			ho.Delay = r.delay
		}
		r.hd = holddev.New(r.dfImageDev(), ho)
		r.dev = r.hd
		r.dfSetupMem(ho)
		if cfg.backend == "lat" {
			m := latdev.Distributed().Scaled(0.01) // 5 µs per op: c512 reads are many ops
			m.Parallel = 8
			m.Sleep = spinSleep
			r.dev = latdev.New(r.hd, m)
		}
	} else {
		r.path = filepath.Join(r.dir, "image.qcow2")
		co.Opener = r.opener
		if err := Create(r.path, co); err != nil {
			r.fatalf("create: %v", err)
		}
		r.checkReserved(r.path)
	}
	if cfg.encrypted() && cfg.dfRaw {
		r.setDataFileRaw()
	}
	r.open(r.base)
	if cfg.bm {
		r.bmStart()
	}
}

// checkReserved: a file Create made with preallocation falloc or full
// has the space of every data cluster (reserveData: reserved, or zeros
// written), as qemu-img's has: it uses at least the virtual size. (The
// torture's reads cannot tell: clusters linked past the end of the file
// read zeros all the same.)
func (r *trun) checkReserved(p string) {
	if r.cfg.prealloc != PreallocFalloc && r.cfg.prealloc != PreallocFull {
		return
	}
	fi, err := os.Stat(p)
	if err != nil {
		r.fatalf("%v", err)
	}
	if a := fi.Sys().(*syscall.Stat_t).Blocks * 512; a < r.size {
		r.fatalf("created with preallocation=%s: the file uses %d bytes, less than the virtual size %d", r.cfg.prealloc, a, r.size)
	}
}

// setDataFileRaw sets data_file_raw in a new encrypted image's header:
// an image as QEMU opens one it made with data_file_raw, but with no
// cluster linked yet (QEMU's links every cluster over plain zeros, which
// read back through the cipher as garbage; Create refuses it).
func (r *trun) setDataFileRaw() {
	var b [8]byte
	var dev block.Device = r.mem
	if !r.cfg.memBacked() {
		f, err := uring.Open(r.path, uring.Options{})
		if err != nil {
			r.fatalf("%v", err)
		}
		defer f.Close()
		dev = f
	}
	const autoclear = 88 // the header's autoclear_features
	if err := dev.Readv(autoclear, [][]byte{b[:]}); err != nil {
		r.fatalf("%v", err)
	}
	binary.BigEndian.PutUint64(b[:], binary.BigEndian.Uint64(b[:])|format.AutoclearDataFileRaw)
	if err := dev.Writev(autoclear, [][]byte{b[:]}); err != nil {
		r.fatalf("%v", err)
	}
	if err := dev.Flush(); err != nil {
		r.fatalf("%v", err)
	}
}

// delay is holddev's jitter during concurrent phases: most ops pass at
// once, some wait up to 200 µs, so concurrent completions reorder.
func (r *trun) delay(o holddev.Op) time.Duration {
	if o.Kind == holddev.Read || !r.jitter.Load() {
		return 0
	}
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	if r.rng.IntN(4) != 0 {
		return 0
	}
	return time.Duration(r.rng.IntN(200)) * time.Microsecond
}

// readyPause sometimes holds allocations in their ready window (Q10)
// during concurrent phases, up to 200 µs, so writers into the cluster go
// early also where it becomes ready only once its COW is written
// (encrypted images, COW from a backing file or an old cluster): a
// window of a few instructions otherwise.
func (r *trun) readyPause() {
	if !r.jitter.Load() {
		return
	}
	r.rngMu.Lock()
	d := 0
	if r.rng.IntN(4) == 0 {
		d = r.rng.IntN(200)
	}
	r.rngMu.Unlock()
	if d > 0 {
		time.Sleep(time.Duration(d) * time.Microsecond)
	}
}

func (r *trun) opener(p string, ro bool) (block.Device, error) {
	uo := uring.Options{ReadOnly: ro, Direct: r.cfg.backend != "ub", NoMerge: r.cfg.backend == "unm"}
	f, err := uring.Open(p, uo)
	if err != nil {
		return nil, err
	}
	r.filesMu.Lock()
	r.files = append(r.files, f)
	r.filesMu.Unlock()
	if r.cfg.backend == "uhd" {
		return holddev.New(f, holddev.Options{Delay: r.delay}), nil
	}
	return f, nil
}

func (r *trun) open(o Options) {
	o.OnEvent = r.onEvent
	var err error
	if r.cfg.memBacked() {
		if r.bdev != nil {
			o.Backing = r.bdev
		}
		o.DataDevice = r.df.dev
		r.im, err = OpenDevice(r.dev, o)
	} else {
		o.Opener = r.opener
		r.im, err = Open(r.path, o)
	}
	if err != nil {
		r.fatalf("open: %v", err)
	}
	r.im.readyPause = r.readyPause
	r.o = o
}

// closeImage closes the image and sums its metrics.
func (r *trun) closeImage() {
	im := r.im
	r.im = nil
	r.st.addMetrics(im.Metrics())
	if err := im.Close(); err != nil {
		r.fatalf("close: %v", err)
	}
	r.filesMu.Lock()
	for _, f := range r.files {
		r.st.Merged += int64(f.Metrics().Merged)
	}
	r.files = nil
	r.filesMu.Unlock()
	r.afterFlush()
}

// reopenRO opens the closed image read-only (own Check, contents).
func (r *trun) reopenRO() *Image {
	o := Options{ReadOnly: true, Passphrase: r.base.Passphrase}
	var im *Image
	var err error
	if r.cfg.memBacked() {
		if r.bdev != nil {
			o.Backing = r.bdev
		}
		o.DataDevice = r.df.dev
		im, err = OpenDevice(r.dev, o)
	} else {
		o.Opener = uring.Opener(uring.Options{})
		im, err = Open(r.path, o)
	}
	if err != nil {
		r.fatalf("reopen read-only: %v", err)
	}
	return im
}

func (r *trun) touch(off, n int64) {
	r.cmu.Lock()
	for s := off / crashSector; s <= (off+n-1)/crashSector && s < int64(len(r.touched)); s++ {
		r.touched[s] = true
	}
	r.cmu.Unlock()
}

func (r *trun) afterFlush() {
	r.cmu.Lock()
	r.flushed = append(r.flushed[:0], r.model...)
	clear(r.touched)
	clear(r.held)
	r.cmu.Unlock()
}

// variants are the options reopens alternate with the configuration's.
var tortureVariants = []func(c tcfg, o *Options){
	func(c tcfg, o *Options) { o.Prealloc = "off" },
	func(c tcfg, o *Options) { o.PreallocSize = -1 },
	func(c tcfg, o *Options) { o.PreallocSize, o.PreallocAlign = 256<<10, 64<<10 },
	func(c tcfg, o *Options) {
		o.PreallocSize, o.PreallocAlign, o.PreallocFill = 4<<20, 8<<20, FillUnwritten
	},
	func(c tcfg, o *Options) { o.PreallocSize, o.PreallocFill = 2<<20, FillZeroes },
	func(c tcfg, o *Options) {
		e := min(c.cs, 4096)
		o.L2CacheEntrySize, o.L2CacheSize, o.RefcountCacheSize = e, int64(2*e), int64(2*c.cs)
	},
	func(c tcfg, o *Options) { o.CacheCleanInterval = 2 * time.Millisecond },
	func(c tcfg, o *Options) { o.Prealloc, o.PreallocSize = "", 0 },
	func(c tcfg, o *Options) { o.NoPassDiscard = true }, // freed clusters keep their host space (Q21)
}

func (r *trun) reopen(arg int) {
	r.closeImage()
	r.closedChecks("reopen", false)
	r.reopens++
	o := r.base
	if r.reopens%2 == 1 {
		tortureVariants[arg%len(tortureVariants)](r.cfg, &o)
	}
	r.open(o)
	if r.cfg.bm {
		r.bmRestart()
	}
	r.compareAll("after reopen")
}

// closedChecks checks the closed image: our Check clean, contents equal
// the model, and (files, or withQemu) qemu-img check clean.
func (r *trun) closedChecks(what string, withQemu bool) {
	im := r.reopenRO()
	res, err := im.Check(CheckOptions{})
	if err != nil {
		im.Close()
		r.fatalf("%s: check: %v", what, err)
	}
	if !res.Clean() {
		im.Close()
		r.fatalf("%s: closed image not clean: %d corruptions, %d leaks, %d errors: %v", what, res.Corruptions, res.Leaks, res.CheckErrors, head(res.Messages, 10))
	}
	got := testkit.ReadAll(r.t, im)
	if r.cfg.bm {
		r.bmVerify(im, what)
	}
	im.Close()
	r.mustModel(got, 0, what+": reopened contents")
	if withQemu || !r.cfg.memBacked() {
		r.qemuCheck(r.dump(), false, what)
	}
	r.st.Checks++
}

// qemuCheck runs qemu-img check; leaks are allowed only if allowLeaks.
func (r *trun) qemuCheck(path string, allowLeaks bool, what string) bool {
	verdict := testkit.QemuCheckResult.Clean
	if allowLeaks {
		verdict = testkit.QemuCheckResult.NoCorruption
	}
	check := testkit.QemuCheckReport
	if r.cfg.encrypted() {
		check = func(p string, ok func(testkit.QemuCheckResult) bool) error {
			return testkit.QemuCheckSecretReport(p, tortureLUKSPass, ok)
		}
	}
	if err := check(path, verdict); err != nil {
		r.t.Errorf("seed %d config %s: %s: %v", r.seed, r.cfg, what, err)
		return false
	}
	return true
}

func (r *trun) mustModel(got []byte, off int64, what string) {
	r.t.Helper()
	want := r.model[off : off+int64(len(got))]
	if bytes.Equal(got, want) {
		return
	}
	if i := testkit.FirstDiff(got, want); i >= 0 {
		r.fatalf("%s: first difference at guest offset %d (%#x): got %#x want %#x (read [%#x,+%#x))", what, off+int64(i), off+int64(i), got[i], want[i], off, len(got))
	}
}

func (r *trun) compareAll(what string) {
	got := make([]byte, r.size)
	if err := block.ReadAt(r.im, got, 0); err != nil {
		r.fatalf("%s: read: %v", what, err)
	}
	r.mustModel(got, 0, what)
}

// check runs our Check on the live image: no corruption, no leaks.
func (r *trun) check(what string) {
	res, err := r.im.Check(CheckOptions{})
	r.st.Checks++
	if err != nil {
		r.fatalf("%s: check: %v", what, err)
	}
	if res.Corruptions != 0 || res.CheckErrors != 0 || res.Leaks != 0 {
		r.fatalf("%s: check of the live image: %d corruptions, %d leaks, %d errors: %v", what, res.Corruptions, res.Leaks, res.CheckErrors, head(res.Messages, 10))
	}
}

// clip limits an op to the current size; false if it lies past it.
func (r *trun) clip(off, n int64) (int64, bool) {
	if off >= r.size {
		r.st.Skipped++
		return 0, false
	}
	return min(n, r.size-off), true
}

func (r *trun) exec(i int, o top) {
	defer func() {
		if e := recover(); e != nil {
			r.fatalf("op %d (%v): panic: %v\n%s", i, o, e, debug.Stack())
		}
	}()
	r.st.Ops++
	tortureTracef("op %d %v", i, o)
	switch o.kind {
	case opWrite, opZero, opDiscard, opRead:
		n, ok := r.clip(o.off, o.n)
		if !ok {
			return
		}
		o.n = n
	}
	im := r.im
	switch o.kind {
	case opWrite:
		r.st.Writes++
		b := make([]byte, o.n)
		r.fillWrite(b, o.pat)
		r.expect(o.off, o.n, func(w []byte, at int64) { copy(w[o.off-at:], b) })
		if err := r.writeAt(im, b, o.off); err != nil {
			r.fatalf("op %d (%v): %v", i, o, err)
		}
		copy(r.model[o.off:], b)
	case opZero:
		r.st.Zeroes++
		o.flags |= r.zeroAllocate(i)
		r.expect(o.off, o.n, func(w []byte, at int64) { clear(w[o.off-at : o.off-at+o.n]) })
		if err := im.WriteZeroes(o.off, o.n, o.flags); err != nil {
			if o.flags&block.Allocate != 0 && errors.Is(err, block.ErrNotSupported) {
				// Refused (block B3): nothing written, which the
				// model's next comparison checks.
				r.st.ZeroAllocRefused++
				return
			}
			r.fatalf("op %d (%v): %v", i, o, err)
		}
		if o.flags&block.Allocate != 0 {
			r.st.ZeroAllocs++
		}
		clear(r.model[o.off : o.off+o.n])
	case opDiscard:
		r.st.Discards++
		r.expect(o.off, o.n, func(w []byte, at int64) { r.discardIn(w, at, o.off, o.n) })
		if err := im.Discard(o.off, o.n); err != nil {
			r.fatalf("op %d (%v): %v", i, o, err)
		}
		r.discardModel(r.model, o.off, o.n)
	case opFlush:
		r.st.Flushes++
		if err := im.Flush(); err != nil {
			r.fatalf("op %d (flush): %v", i, err)
		}
		r.afterFlush()
	case opRead:
		r.st.Reads++
		b := make([]byte, o.n)
		if _, err := im.ReadAt(b, o.off); err != nil {
			r.fatalf("op %d (%v): %v", i, o, err)
		}
		r.mustModel(b, o.off, fmt.Sprintf("op %d (%v)", i, o))
	case opReopen:
		r.st.Reopens++
		r.reopen(o.arg)
	case opGrow:
		if o.off <= r.size {
			return
		}
		err := im.Truncate(o.off)
		if errors.Is(err, ErrUnsupported) && !*tortureRequireGrow {
			r.st.GrowSkips++
			return
		}
		if err != nil {
			r.fatalf("op %d (%v): %v", i, o, err)
		}
		r.st.Grows++
		r.cmu.Lock()
		r.model = append(r.model, make([]byte, o.off-r.size)...)
		r.flushed = append(r.flushed, make([]byte, o.off-r.size)...)
		r.touched = append(r.touched, make([]bool, (o.off+crashSector-1)/crashSector-int64(len(r.touched)))...)
		r.size = o.off
		r.cmu.Unlock()
		if sz, _ := im.Size(); sz != o.off {
			r.fatalf("op %d (%v): size %d after growth", i, o, sz)
		}
	case opShrink:
		if o.off >= r.size {
			return
		}
		if o.arg == regrowArg && !r.canRegrow(o.off) {
			r.st.RegrowSkips++
			return
		}
		// Until it returns, a crash may leave the old size with the
		// range past the new end partly discarded (or its last cluster
		// zeroed past the end): not compared.
		r.touch(o.off, r.size-o.off)
		if err := im.Shrink(o.off); err != nil {
			if errors.Is(err, ErrUnsupported) && r.cfg.v2 && len(r.snaps) > 0 {
				r.st.SnapSkips++ // QEMU does not resize v2 images with snapshots
				return
			}
			r.fatalf("op %d (%v): %v", i, o, err)
		}
		r.st.Shrinks++
		if o.arg == regrowArg {
			r.st.Regrows++
		}
		r.cmu.Lock()
		r.model = r.model[:o.off]
		r.bmCut(o.off)
		r.flushed = r.flushed[:min(o.off, int64(len(r.flushed)))]
		r.touched = r.touched[:(o.off+crashSector-1)/crashSector]
		r.size = o.off
		r.cmu.Unlock()
		r.afterFlush() // Shrink flushes the image before the header
		if sz, _ := im.Size(); sz != o.off {
			r.fatalf("op %d (%v): size %d after shrink", i, o, sz)
		}
	case opBatch:
		r.st.Batches++
		r.runBatch(i, o.batch)
		r.check(fmt.Sprintf("after batch op %d", i))
	case opCheck:
		r.check(fmt.Sprintf("op %d", i))
	case opSnap:
		r.snapshot(i, o)
	}
}

// canRegrow says whether the image, shrunk to size, grows back (a
// regrow episode's shrink, genRegrow): not an encrypted image with a raw
// data file (growth refused), nor a version 2 image from inside its
// backing file (ErrGrowNeedsZeroClusters) or with snapshots (Shrink
// refused too).
func (r *trun) canRegrow(size int64) bool {
	switch {
	case r.cfg.encrypted() && r.cfg.dfRaw:
		return false
	case r.cfg.v2 && (len(r.snaps) > 0 || r.bdata != nil && size < int64(len(r.bdata))):
		return false
	}
	return true
}

// discardModel applies Discard's semantics: clusters wholly inside the
// range (and the last, partial cluster when the range ends at the end of
// the image) read as zeros; on v2 with a backing file nothing changes
// (no zero clusters to hide it with, as in QEMU).
func (r *trun) discardModel(model []byte, off, n int64) {
	if lo, hi, ok := r.discarded(off, n); ok {
		clear(model[lo:min(hi, int64(len(model)))])
	}
}

// discarded is the range a Discard of [off, off+n) makes read as zeros
// (discardModel), if any.
func (r *trun) discarded(off, n int64) (lo, hi int64, ok bool) {
	if r.cfg.v2 && r.bdata != nil {
		return 0, 0, false
	}
	cs := int64(r.cfg.cs)
	first := (off + cs - 1) / cs
	end := (off + n) / cs
	if off+n == r.size {
		end = (off + n + cs - 1) / cs
	}
	if first >= end {
		return 0, 0, false
	}
	return first * cs, min(end*cs, r.size), true
}

// runBatch runs a concurrent phase (tbatch).
func (r *trun) runBatch(i int, b *tbatch) {
	if b.sbase+b.sspan > r.size || b.base+b.span > r.size {
		r.st.Skipped++
		return
	}
	b = batchZeroAllocate(b)
	r.expectBatch(b)
	r.jitter.Store(true)
	defer r.jitter.Store(false)
	im := r.im
	t := r.t
	var mu sync.RWMutex
	var wg sync.WaitGroup
	var ryw, rywBad, nops atomic.Int64
	var zs batchZeroStats
	stop := make(chan struct{})
	var stopOnce sync.Once
	failf := func(f string, a ...any) {
		t.Errorf("seed %d config %s: batch op %d: "+f, append([]any{r.seed, r.cfg, i}, a...)...)
		stopOnce.Do(func() { close(stop) })
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	guard := func(who string) {
		if e := recover(); e != nil {
			failf("%s: panic: %v\n%s", who, e, debug.Stack())
		}
	}
	// writeRYW writes and, for every acknowledged write, reads it back
	// (a read issued after an acknowledged write must see it).
	writeRYW := func(who string, o top) bool {
		data := make([]byte, o.n)
		fillPattern(data, o.pat)
		tortureTracef("batch write (%s) %v", who, o)
		if _, err := im.WriteAt(data, o.off); err != nil {
			failf("%s: write [%#x,+%#x): %v", who, o.off, o.n, err)
			return false
		}
		got := make([]byte, o.n)
		if _, err := im.ReadAt(got, o.off); err != nil {
			failf("%s: read: %v", who, err)
			return false
		}
		ryw.Add(1)
		if k := testkit.FirstDiff(got, data); k >= 0 {
			if tolerate("ryw") {
				if rywBad.Add(1) == 1 {
					t.Logf("seed %d config %s: batch op %d: %s: tolerated read-your-writes violation at guest offset %#x (bug 2)", r.seed, r.cfg, i, who, o.off+int64(k))
				}
				return true
			}
			failf("%s: read-your-writes: write [%#x,+%#x) acknowledged, the read after it differs at guest offset %#x: got %#x want %#x (early writes so far: %d)",
				who, o.off, o.n, o.off+int64(k), got[k], data[k], im.Metrics().EarlyWrites)
			return false
		}
		return true
	}
	// syncZero runs an own-stripe zeroing or discard and updates the model.
	syncZero := func(who string, o top) bool {
		tortureTracef("batch zero (%s) %v", who, o)
		if o.kind == opZero {
			if err := im.WriteZeroes(o.off, o.n, o.flags); err != nil {
				return r.zeroRefused(who, o, err, &mu, &zs, failf)
			}
			if o.flags&block.Allocate != 0 {
				zs.done.Add(1)
			}
			mu.RLock()
			clear(r.model[o.off : o.off+o.n])
			mu.RUnlock()
			return true
		}
		if err := im.Discard(o.off, o.n); err != nil {
			failf("%s: discard [%#x,+%#x): %v", who, o.off, o.n, err)
			return false
		}
		mu.RLock()
		r.discardModel(r.model, o.off, o.n)
		mu.RUnlock()
		return true
	}
	admin := r.startBatchAdmin(i, b, &wg, failf, stopped, guard)
	for g := range b.own {
		if g == 0 && r.cfg.queue {
			wg.Go(func() {
				defer guard("queue owner")
				r.runQueued(b.own[0], &mu, failf, stopped, syncZero, &nops, &ryw, &zs)
			})
			continue
		}
		wg.Go(func() {
			who := fmt.Sprintf("goroutine %d", g)
			defer guard(who)
			for _, o := range b.own[g] {
				if stopped() {
					return
				}
				nops.Add(1)
				switch o.kind {
				case opWrite:
					if !writeRYW(who, o) {
						return
					}
					data := make([]byte, o.n)
					fillPattern(data, o.pat)
					mu.RLock()
					copy(r.model[o.off:], data)
					mu.RUnlock()
				case opRead:
					got := make([]byte, o.n)
					if _, err := im.ReadAt(got, o.off); err != nil {
						failf("%s: read: %v", who, err)
						return
					}
					mu.RLock()
					k := testkit.FirstDiff(got, r.model[o.off:o.off+o.n])
					var w byte
					if k >= 0 {
						w = r.model[o.off+int64(k)]
					}
					mu.RUnlock()
					if k >= 0 && tolerate("ryw") {
						// Bug 2: an early write not yet visible; the
						// window compare after the batch decides
						// whether it was lost.
						rywBad.Add(1)
						continue
					}
					if k >= 0 {
						failf("%s: own stripe [%#x,+%#x) differs at %#x: got %#x want %#x", who, o.off, o.n, o.off+int64(k), got[k], w)
						return
					}
				case opZero, opDiscard:
					if !syncZero(who, o) {
						return
					}
				}
			}
		})
	}
	// Two dup writers race on the shared window with identical data.
	for d := 0; d < 2; d++ {
		wg.Go(func() {
			who := fmt.Sprintf("dup writer %d", d)
			defer guard(who)
			rr := rand.New(rand.NewPCG(b.seed, uint64(d)))
			items := append([]top(nil), b.shared...)
			rr.Shuffle(len(items), func(a, c int) { items[a], items[c] = items[c], items[a] })
			for _, o := range items {
				if stopped() {
					return
				}
				nops.Add(1)
				if !writeRYW(who, o) {
					return
				}
			}
		})
	}
	// Readers across the windows' edges verify the bytes outside them.
	for k := 0; k < b.readers; k++ {
		wg.Go(func() {
			who := fmt.Sprintf("reader %d", k)
			defer guard(who)
			rr := rand.New(rand.NewPCG(b.seed, uint64(100+k)))
			for j := 0; j < 20 && !stopped(); j++ {
				edge := []int64{b.base, b.base + b.span, b.sbase, b.sbase + b.sspan}[rr.IntN(4)]
				lo := max(0, edge-rr.Int64N(64<<10))
				n := min(1+rr.Int64N(128<<10), r.size-lo)
				got := make([]byte, n)
				nops.Add(1)
				if _, err := im.ReadAt(got, lo); err != nil {
					failf("%s: read: %v", who, err)
					return
				}
				for x := int64(0); x < n; x++ {
					p := lo + x
					if (p >= b.base && p < b.base+b.span) || (p >= b.sbase && p < b.sbase+b.sspan) {
						continue
					}
					if got[x] != r.model[p] {
						failf("%s: stable byte at %#x: got %#x want %#x", who, p, got[x], r.model[p])
						return
					}
				}
			}
		})
	}
	for k := 0; k < b.flushes; k++ {
		wg.Go(func() {
			defer guard("flusher")
			time.Sleep(time.Duration(k*300) * time.Microsecond)
			nops.Add(1)
			if err := im.Flush(); err != nil {
				failf("flush: %v", err)
			}
		})
	}
	if !testkit.Within(2*time.Minute, wg.Wait) {
		buf := make([]byte, 1<<20)
		n := runtimeStack(buf)
		r.fatalf("batch op %d: hung for 2 minutes (deadlock?)\n%s", i, buf[:n])
	}
	r.st.RYWChecks += ryw.Load()
	r.st.addBatchZeroes(&zs)
	r.st.RYWViolations += rywBad.Load()
	r.st.BatchOps += nops.Load()
	if t.Failed() {
		t.FailNow()
	}
	r.finishBatchAdmin(i, b, admin)
	for _, o := range b.shared {
		data := make([]byte, o.n)
		fillPattern(data, o.pat)
		copy(r.model[o.off:], data)
	}
	for _, w := range [][2]int64{{b.base, b.span}, {b.sbase, b.sspan}} {
		got := make([]byte, w[1])
		if _, err := im.ReadAt(got, w[0]); err != nil {
			r.fatalf("batch op %d: read: %v", i, err)
		}
		r.mustModel(got, w[0], fmt.Sprintf("batch op %d: window after the batch", i))
	}
}

func (r *trun) finish() {
	if err := r.im.Flush(); err != nil {
		r.fatalf("final flush: %v", err)
	}
	r.afterFlush()
	r.compareAll("final contents")
	r.closeImage()
	r.closedChecks("final", true)
	r.qbUnchanged("final")
	path := r.dump()
	if testkit.HaveQemu() {
		raw := filepath.Join(r.dir, "converted.raw")
		src := []string{"-f", "qcow2", path}
		if r.cfg.encrypted() {
			src = testkit.QemuSecretArgs(path, tortureLUKSPass)
		}
		if out, err := exec.Command("qemu-img", append(append([]string{"convert"}, src...), "-O", "raw", raw)...).CombinedOutput(); err != nil {
			r.fatalf("qemu-img convert: %v\n%s", err, out)
		}
		got, err := os.ReadFile(raw)
		if err != nil {
			r.fatalf("%v", err)
		}
		os.Remove(raw)
		if int64(len(got)) != r.size {
			r.fatalf("qemu-img convert: %d bytes, want %d", len(got), r.size)
		}
		r.mustModel(got, 0, "qemu-img convert -O raw")
		r.checkSnapshotsQemu(path)
	}
	if r.t.Failed() {
		r.t.FailNow()
	}
	b, _ := json.Marshal(r.st)
	fmt.Printf("TORTURE-STATS %s\n", b)
	r.t.Logf("seed %d config %s: %v", r.seed, r.cfg, r.st)
}

// --- crash clones ---

var rareKinds = map[string]bool{"reserve": true, "refblock": true, "reftable": true, "l1-grow": true, "l2": true, "dev-truncate": true}

func (r *trun) onEvent(ev Event) {
	r.evMu.Lock()
	r.st.Events[ev.String()]++
	r.evMu.Unlock()
	r.maybeCrash(ev.String())
}

// devHook runs before every mutating device op (memdev backends).
func (r *trun) devHook(o holddev.Op) {
	tortureTracef("dev %v zoff=%#x zlen=%#x off=%#x len=%#x", o.Kind, o.ZOff, o.ZLen, o.Off, o.Len)
	r.maybeCrash("dev-" + strings.ReplaceAll(o.Kind.String(), "+", ""))
}

// maybeCrash takes a crash clone at this moment (sampled by kind) and
// verifies it at once: reopen, Check without corruption, flushed data
// intact, leaks repairable; qemu-img check on a sample.
func (r *trun) maybeCrash(kind string) {
	if r.mem == nil || r.perKind <= 0 {
		return
	}
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if r.crashOff {
		return
	}
	n := r.seen[kind]
	r.seen[kind]++
	taken := r.st.Crash[kind]
	if taken >= int64(r.perKind) {
		return
	}
	p := 150
	if rareKinds[kind] {
		p = 4
	}
	if n > 0 && r.crng.IntN(p) != 0 {
		return
	}
	tortureTracef("crash clone %s #%d", kind, r.clones+1)
	clone := r.dfCrashClone() // df: the data file's too, at the same moment
	r.clones++
	withQemu := taken == 0 || r.crng.IntN(4) == 0
	if !r.verifyClone(kind, clone, withQemu) {
		r.crashFails++
		r.crashOff = true // one kept clone is enough
		return
	}
	r.st.Crash[kind]++
	if withQemu {
		r.st.CrashQemu++
	}
}

// verifyClone is called with cmu held.
func (r *trun) verifyClone(kind string, clone *memdev.Dev, withQemu bool) bool {
	keep := func(why string, a ...any) bool {
		p := filepath.Join(r.dir, fmt.Sprintf("crash-%s-%d.qcow2", kind, r.clones))
		clone.WriteFile(p)
		r.t.Errorf("seed %d config %s: crash clone at %s #%d: %s (clone kept in %s)", r.seed, r.cfg, kind, r.clones, fmt.Sprintf(why, a...), p)
		return false
	}
	before := clone.Clone() // the clone as it crashed: opening it changes it
	o := r.o
	o.OnEvent = nil
	o.Opener = nil
	if r.bdev != nil {
		o.Backing = r.bdev
	}
	var dbefore *memdev.Dev
	if r.df.clone != nil {
		dbefore = r.df.clone.Clone()
		o.DataDevice = r.df.clone
	}
	im, err := OpenDevice(clone, o)
	if err != nil {
		clone = before
		return keep("reopen: %v", err)
	}
	res, err := im.Check(CheckOptions{})
	copiedOnly := false
	if err == nil && res.CheckErrors == 0 && res.Corruptions+res.Leaks != 0 && r.inSnap && onlyCopied(res.Messages) {
		// A crash inside a snapshot operation may leave COPIED out of
		// step with the counts, as QEMU's ordering does
		// (TestCrash_Snapshot): set on a cluster whose increment
		// outlived the crash, or missing once a leak repair brings a
		// count back to 1 (a delete's decrements lost); -r all
		// repairs both in one pass.
		copiedOnly = true
		res, err = im.Check(CheckOptions{Repair: RepairAll})
		if err == nil {
			res, err = im.Check(CheckOptions{})
		}
	}
	if err != nil || res.Corruptions != 0 || res.CheckErrors != 0 {
		im.Close()
		clone = before
		return keep("check: %v: %d corruptions, %d errors: %v", err, res.Corruptions, res.CheckErrors, head(res.Messages, 8))
	}
	sz, _ := im.Size()
	n := min(sz, int64(len(r.flushed)))
	got := make([]byte, sz)
	if err := block.ReadAt(im, got, 0); err != nil {
		im.Close()
		clone = before
		return keep("read: %v", err)
	}
	for s := int64(0); s*crashSector < n; s++ {
		if r.touched[s] {
			continue
		}
		lo, hi := s*crashSector, min((s+1)*crashSector, n)
		k := testkit.FirstDiff(got[lo:hi], r.flushed[lo:hi])
		if k < 0 {
			continue
		}
		vals, wrote := r.held[s]
		if !wrote {
			im.Close()
			clone = before
			return keep("flushed data lost at guest offset %#x: got %#x want %#x", lo+int64(k), got[lo+int64(k)], r.flushed[lo+int64(k)])
		}
		if k := neverHeld(got[lo:hi], r.flushed[lo:hi], vals); k >= 0 {
			im.Close()
			clone = before
			return keep("unflushed sector at guest offset %#x holds a byte it never held since the flush: got %#x at %#x (flushed %#x, %d later values)", lo, got[lo+int64(k)], lo+int64(k), r.flushed[lo+int64(k)], len(vals))
		}
	}
	if res.Leaks > 0 {
		res, err = im.Check(CheckOptions{Repair: RepairLeaks})
		if err != nil || !res.Clean() {
			im.Close()
			clone = before
			return keep("leak repair: %v %+v", err, res)
		}
	}
	// The recovered image must keep working: writes after the crash
	// (allocating ones too) must not damage what it holds.
	if msg := postCrashWrites(im, got, r.crng); msg != "" {
		im.Close()
		clone = before
		return keep("after recovery, %s", msg)
	}
	if err := im.Close(); err != nil {
		clone = before
		return keep("close after recovery: %v", err)
	}
	if withQemu && testkit.HaveQemu() {
		p := filepath.Join(r.dir, "crash-check.qcow2")
		// The clone as the power cut left it (dirty lazy images need
		// our recovery first: qemu-img check would report their
		// stale refcounts), then after our recovery.
		if !r.cfg.lazy && !copiedOnly {
			before.WriteFile(p)
			r.dfDump(dbefore)
			if !r.qemuCheck(p, true, "crash clone at "+kind) {
				clone = before
				return keep("qemu-img check of the clone failed")
			}
		}
		clone.WriteFile(p)
		r.dfDump(r.df.clone)
		if !r.qemuCheck(p, false, "crash clone at "+kind+" after recovery") {
			clone = before
			return keep("qemu-img check after recovery failed")
		}
		os.Remove(p)
	}
	return true
}

// bytesEqualModel is used by the hold scenarios.
func bytesEqualAt(t *testing.T, im *Image, off int64, want []byte, what string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := im.ReadAt(got, off); err != nil {
		t.Fatalf("%s: read: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		k := testkit.FirstDiff(got, want)
		t.Fatalf("%s: differs at guest offset %#x: got %#x want %#x", what, off+int64(k), got[k], want[k])
	}
}

// postCrashWrites writes to a recovered image (model: its contents,
// updated), flushes, and compares everything; "" when all is well.
func postCrashWrites(im *Image, model []byte, rng *rand.Rand) string {
	size := int64(len(model))
	for k := 0; k < 8; k++ {
		n := min(1+rng.Int64N(256<<10), size)
		off := rng.Int64N(size - n + 1)
		if k%2 == 0 {
			off &^= 4095
		}
		b := make([]byte, n)
		fillPattern(b, rng.Uint64())
		if _, err := im.WriteAt(b, off); err != nil {
			return fmt.Sprintf("write [%#x,+%#x): %v", off, n, err)
		}
		copy(model[off:], b)
	}
	if err := im.Flush(); err != nil {
		return fmt.Sprintf("flush: %v", err)
	}
	got := make([]byte, size)
	if err := block.ReadAt(im, got, 0); err != nil {
		return fmt.Sprintf("read: %v", err)
	}
	if i := testkit.FirstDiff(got, model); i >= 0 {
		return fmt.Sprintf("8 writes and a flush: contents differ at guest offset %#x: got %#x want %#x", i, got[i], model[i])
	}
	res, err := im.Check(CheckOptions{})
	if err != nil || !res.Clean() {
		return fmt.Sprintf("8 writes and a flush: check: %v %d corruptions, %d leaks, %d errors: %v", err, res.Corruptions, res.Leaks, res.CheckErrors, head(res.Messages, 5))
	}
	return ""
}

// spinSleep waits out latdev's scaled costs (a few µs) by yielding
// rather than sleeping: a timer rounds a 5 µs sleep up to about half a
// millisecond here, which made a c512 case with a backing file (many
// small reads) run for nine minutes, past the loop's case timeout.
// Costs of a fifth of a millisecond and more still sleep.
func spinSleep(d time.Duration) {
	if d >= 200*time.Microsecond {
		time.Sleep(d)
		return
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		runtime.Gosched()
	}
}
