package qcow2

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/block/latdev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// isFillWrite reports whether a Writev is one of the filler's zero
// pieces: a single buffer from the shared zero buffer (guest writes and
// zero padding never send it alone).
func isFillWrite(bufs [][]byte) bool {
	return len(bufs) == 1 && len(bufs[0]) > 0 && &bufs[0][0] == &block.ZeroBuf()[0]
}

// gateDev holds the filler's zero writes until gate is closed, and
// records where they went.
type gateDev struct {
	*memdev.Dev
	gate    chan struct{}
	blocked atomic.Int64 // fill writes waiting at the gate
	after   atomic.Bool  // set once the image is closed: no fill may start
	late    atomic.Int64 // fill writes that started after that

	mu     sync.Mutex
	pieces [][2]int64
}

func (d *gateDev) Writev(off int64, bufs [][]byte) error {
	if isFillWrite(bufs) {
		if d.after.Load() {
			d.late.Add(1)
		}
		d.mu.Lock()
		d.pieces = append(d.pieces, [2]int64{off, off + block.VecLen(bufs)})
		d.mu.Unlock()
		d.blocked.Add(1)
		<-d.gate
		d.blocked.Add(-1)
	}
	return d.Dev.Writev(off, bufs)
}

func (d *gateDev) Close() error { return nil }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFill_Resolve: the mode prealloc-fill resolves to, and why, per
// option and medium, through the test devices and filters that report
// one; no fill without a reserve ahead.
func TestFill_Resolve(t *testing.T) {
	mem := func(m block.Media) block.Device { return memdev.New(memdev.Options{Media: m}) }
	raw := func(d block.Device) block.Device {
		r, err := filter.NewRaw(d, filter.RawOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	quorum := func(kids ...block.Device) block.Device {
		q, err := filter.NewQuorum(kids, filter.QuorumOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	cases := []struct {
		name     string
		dev      block.Device
		o        Options
		fill     string
		why      string
		ahead    int64
		reserved bool
	}{
		{"ram-auto", mem(block.MediaRAM), Options{}, FillZeroes, "auto: ram", DefaultPreallocSize, true},
		{"ssd-auto", mem(block.MediaSSD), Options{PreallocFill: FillAuto}, FillUnwritten, "auto: ssd", DefaultPreallocSize, true},
		{"ssd-zeroes", mem(block.MediaSSD), Options{PreallocFill: FillZeroes}, FillZeroes, "prealloc-fill=zeroes", DefaultPreallocSize, true},
		{"hdd-auto", mem(block.MediaHDD), Options{}, FillUnwritten, "auto: hdd", DefaultPreallocSize, true},
		{"unknown-auto", mem(block.MediaUnknown), Options{}, FillUnwritten, "auto: unknown", DefaultPreallocSize, true},
		{"hdd-zeroes", mem(block.MediaHDD), Options{PreallocFill: FillZeroes}, FillZeroes, "prealloc-fill=zeroes", DefaultPreallocSize, true},
		{"ram-unwritten", mem(block.MediaRAM), Options{PreallocFill: FillUnwritten}, FillUnwritten, "prealloc-fill=unwritten", DefaultPreallocSize, true},
		{"latdev-hdd", latdev.New(mem(block.MediaRAM), latdev.HDD().Scaled(0)), Options{}, FillUnwritten, "auto: hdd", DefaultPreallocSize, true},
		{"raw-over-ram", raw(mem(block.MediaRAM)), Options{PreallocSize: 8 << 20}, FillZeroes, "auto: ram", 8 << 20, true},
		{"raw-over-ssd", raw(mem(block.MediaSSD)), Options{PreallocSize: 8 << 20}, FillUnwritten, "auto: ssd", 8 << 20, true},
		{"metered-ssd-auto", memdev.New(memdev.Options{Media: block.MediaSSD, Metered: true}), Options{}, FillUnwritten, "auto: metered", DefaultPreallocSize, true},
		{"throttled-ram-auto", filter.NewThrottle(mem(block.MediaRAM), filter.ThrottleLimits{IOPSWrite: 1e6}, nil), Options{}, FillUnwritten, "auto: metered", DefaultPreallocSize, true},
		// Zeros streamed ahead reach every copy: RAM only when all are.
		{"blkverify-ram-over-ssd", filter.NewBlkverify(mem(block.MediaRAM), mem(block.MediaSSD)), Options{}, FillUnwritten, "auto: ssd", DefaultPreallocSize, true},
		{"quorum-of-ram", quorum(mem(block.MediaRAM), mem(block.MediaRAM), mem(block.MediaRAM)), Options{}, FillZeroes, "auto: ram", DefaultPreallocSize, true},
		{"metered-zeroes", memdev.New(memdev.Options{Media: block.MediaHDD, Metered: true}), Options{PreallocFill: FillZeroes}, FillZeroes, "prealloc-fill=zeroes", DefaultPreallocSize, true},
		{"prealloc-off", mem(block.MediaRAM), Options{Prealloc: "off"}, "", "", 0, false},
		{"no-reserve", mem(block.MediaRAM), Options{PreallocSize: -1, PreallocFill: FillZeroes}, "", "", 0, false},
		{"no-fallocate", memdev.New(memdev.Options{Media: block.MediaRAM, NoAllocate: true}), Options{}, "", "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := CreateDevice(tc.dev, CreateOptions{Size: 16 << 20}); err != nil {
				t.Fatal(err)
			}
			im, err := OpenDevice(tc.dev, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			p := im.Metrics().Prealloc
			if p.Fill != tc.fill || p.FillReason != tc.why || p.Ahead != tc.ahead || im.space.fill.enabled != (tc.fill == FillZeroes) {
				t.Fatalf("Prealloc %+v (filler on %v), want fill %q (%q), ahead %d", p, im.space.fill.enabled, tc.fill, tc.why, tc.ahead)
			}
		})
	}
	if _, err := OpenDevice(mem(block.MediaRAM), Options{PreallocFill: "zeros"}); err == nil {
		t.Error("Open accepted prealloc-fill=zeros")
	}
	var o Options
	if err := o.Parse("prealloc-fill=zeroes"); err != nil || o.PreallocFill != FillZeroes {
		t.Errorf("Parse: %v %+v", err, o)
	}
	if err := o.Set("prealloc_fill", "bogus"); err == nil {
		t.Error("Set accepted prealloc-fill=bogus")
	}
	if got := (PreallocInfo{On: true, Ahead: 128 << 20, Fill: FillZeroes, FillReason: "auto: ram"}).String(); got != "ahead 128 MiB, fill zeroes (auto: ram)" {
		t.Errorf("PreallocInfo.String() = %q", got)
	}
}

// TestFiller_NextStart pins where pieces start: after the claimed
// region, never at the frontier (a gap of 1-2 MiB is left to allocate
// without waiting), within the window and the reserve.
func TestFiller_NextStart(t *testing.T) {
	const M = 1 << 20
	for _, tc := range []struct {
		next, floor, limit uint64
		start              uint64
		ok                 bool
	}{
		{next: 256 << 10, floor: 320 << 10, limit: 40 * M, start: 2 * M, ok: true}, // at open: skip to past the frontier
		{next: 10 * M, floor: 5 * M, limit: 40 * M, start: 10 * M, ok: true},       // ahead: continue
		{next: 10 * M, floor: 9*M + 512<<10, limit: 40 * M, start: 11 * M, ok: true},
		{next: 10 * M, floor: 12 * M, limit: 40 * M, start: 13 * M, ok: true}, // outrun: skip
		{next: 38 * M, floor: 37 * M, limit: 40 * M, start: 38 * M, ok: true},
		{next: 39 * M, floor: 39*M - 64<<10, limit: 40 * M, start: 40 * M, ok: false},                     // the gap reaches the end
		{next: 40 * M, floor: 37 * M, limit: 40 * M, start: 40 * M, ok: false},                            // reserve filled
		{next: 5*M + fillLow + fillChunk, floor: 5 * M, limit: 100 * M, start: 5*M + fillLow + fillChunk}, // window full
	} {
		f := filler{next: tc.next, floor: tc.floor, limit: tc.limit, align: 4096}
		start, ok := f.nextStartLocked()
		if start != tc.start || ok != tc.ok {
			t.Errorf("next %d floor %d limit %d: start %d ok %v, want %d %v", tc.next, tc.floor, tc.limit, start, ok, tc.start, tc.ok)
		}
	}
}

// fillDev opens a fresh image on a memdev (RAM) or on a real file
// through io_uring with O_DIRECT (t.TempDir()); reopen returns the image
// read-only after close (checked by Check and qemu-img check).
type fillDev struct {
	name string
	open func(t *testing.T, co CreateOptions, o Options) (im *Image, reopen func() *Image)
}

var fillDevs = []fillDev{
	{"mem", func(t *testing.T, co CreateOptions, o Options) (*Image, func() *Image) {
		im, mem := memImage(t, co, o, memdev.Options{Media: block.MediaRAM})
		return im, func() *Image {
			im2, err := OpenDevice(mem, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			mustClean(t, im2)
			t.Cleanup(func() { im2.Close() })
			return im2
		}
	}},
	{"file", func(t *testing.T, co CreateOptions, o Options) (*Image, func() *Image) {
		o.Opener = uringOpener()
		im, p := testImage(t, co, o)
		return im, func() *Image {
			ownCheck(t, p)
			testkit.QemuCheck(t, p)
			im2, err := Open(p, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { im2.Close() })
			return im2
		}
	}},
}

// fillWorkload writes into im and its shadow.
type fillWorkload struct {
	name string
	run  func(t *testing.T, im *Image, shadow []byte, rng *rand.Rand)
}

var fillWorkloads = []fillWorkload{
	{"seq", func(t *testing.T, im *Image, shadow []byte, rng *rand.Rand) {
		// Sequential writes of odd sizes over 40 MiB: host allocation
		// runs through several fill windows and reservations.
		for off := int64(0); off < 40<<20; {
			n := int64(1 + rng.IntN(192<<10))
			p := pattern(int(n), byte(rng.Uint32()))
			mustWrite(t, im, p, off)
			copy(shadow[off:], p)
			off += n
		}
	}},
	{"random", func(t *testing.T, im *Image, shadow []byte, rng *rand.Rand) {
		for range 800 {
			n := int64(1 + rng.IntN(128<<10))
			off := rng.Int64N(int64(len(shadow)) - n)
			p := pattern(int(n), byte(rng.Uint32()))
			mustWrite(t, im, p, off)
			copy(shadow[off:], p)
		}
	}},
	{"concurrent", func(t *testing.T, im *Image, shadow []byte, rng *rand.Rand) {
		// 8 writers own interleaved 4 KiB blocks of the first 32 MiB,
		// written in random order: allocations race with each other and
		// with the filler.
		const G, blk, blocks = 8, 4096, 32 << 20 / 4096
		var wg sync.WaitGroup
		errs := make(chan error, G)
		for g := range G {
			order := rand.New(rand.NewPCG(rng.Uint64(), uint64(g))).Perm(blocks / G)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, i := range order {
					off := int64(i*G+g) * blk
					p := pattern(blk, byte(i*G+g))
					if _, err := im.WriteAt(p, off); err != nil {
						errs <- err
						return
					}
					copy(shadow[off:], p) // disjoint per writer
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}},
}

// TestFill_Modes: the three prealloc-fill modes on a RAM memdev and a
// real file, with writers that race with each other and with the filler
// (fillWorkloads' concurrent): data reads back as the shadow (before and
// after close), the images check clean (ours and qemu-img's), and zeros
// were streamed ahead with zeroes (and with auto on RAM) but not with
// unwritten. TestFill_ModesOneWriter runs the one-writer workloads.
// Under the race detector auto is left out: it resolves at open to
// zeroes or unwritten (resolveFill; the judge is off outside its own
// tests), so its writers race with the same filler, or none, as the
// mode it chose, and the choice is one goroutine's; make test's pass
// without the race detector runs all six (the Makefile's BOTHPASSES;
// auto was 9 s of the 28 s under it, 2026-12-02).
func TestFill_Modes(t *testing.T) {
	t.Parallel()
	testFillModes(t, true)
}

// TestFill_ModesOneWriter: TestFill_Modes with one writer (sequential,
// random), whose only concurrency is the filler's: it runs without the
// race detector (the Makefile's NORACE), TestFill_Modes with it.
func TestFill_ModesOneWriter(t *testing.T) {
	t.Parallel()
	testFillModes(t, false)
}

func testFillModes(t *testing.T, concurrent bool) {
	const size = 64 << 20
	for _, dv := range fillDevs {
		for _, mode := range []string{FillUnwritten, FillZeroes, FillAuto} {
			for _, wl := range fillWorkloads {
				if (wl.name == "concurrent") != concurrent {
					continue
				}
				if mode == FillAuto && wl.name != "concurrent" {
					continue // auto is one of the others: check the choice once
				}
				if mode == FillAuto && raceEnabled {
					continue // see TestFill_Modes
				}
				t.Run(dv.name+"/"+mode+"/"+wl.name, func(t *testing.T) {
					t.Parallel() // its own image; two at a time pack better than one long test
					rng := testkit.Rand(t)
					im, reopen := dv.open(t, CreateOptions{Size: size}, Options{PreallocFill: mode})
					want, _, _ := resolveFill(mode, im.dcap)
					shadow := make([]byte, size)
					wl.run(t, im, shadow, rng)
					testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "image vs shadow")
					if err := im.Flush(); err != nil {
						t.Fatal(err)
					}
					im.waitFillIdle()
					m := im.Metrics()
					t.Logf("%s: %d B filled, %d waits; %v", m.Prealloc, m.FillBytes, m.FillWaits, im.dcap.Media)
					if m.Prealloc.Fill != want {
						t.Fatalf("fill %q, want %q", m.Prealloc.Fill, want)
					}
					switch {
					case want == FillZeroes && (m.FillBytes == 0 || m.FillErrors != 0):
						t.Errorf("zeroes: %d B filled, %d errors", m.FillBytes, m.FillErrors)
					case want == FillUnwritten && m.FillBytes != 0:
						t.Errorf("unwritten: %d B filled", m.FillBytes)
					}
					if err := im.Close(); err != nil {
						t.Fatal(err)
					}
					testkit.MustEqual(t, testkit.ReadAll(t, reopen()), shadow, "reopened image vs shadow")
				})
			}
		}
	}
}

// gateImage opens a zeroes-fill image on a gateDev and writes guest
// cluster 0, which reserves space and starts the filler; it returns
// once every worker holds a piece at the gate.
func gateImage(t *testing.T, co CreateOptions) (*Image, *gateDev, []byte) {
	t.Helper()
	mem := memdev.New(memdev.Options{Media: block.MediaRAM})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	gd := &gateDev{Dev: mem, gate: make(chan struct{})}
	im, err := OpenDevice(gd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !im.space.fill.enabled {
		t.Fatal("no filler on a RAM device with prealloc-fill=auto")
	}
	shadow := make([]byte, co.Size)
	p := pattern(4096, 1)
	mustWrite(t, im, p, 0)
	copy(shadow, p)
	waitFor(t, "fill workers at the gate", func() bool { return gd.blocked.Load() == fillWorkers })
	return im, gd, shadow
}

// TestFill_AllocationWaits: an allocation that reaches a piece being
// filled waits for that zero write to complete, and the data written to
// the cluster allocated there (and to clusters allocated before, in the
// gap, and after, in filled space) is never clobbered by zeros (Q11).
func TestFill_AllocationWaits(t *testing.T) {
	const cs = 64 << 10
	im, gd, shadow := gateImage(t, CreateOptions{Size: 64 << 20, ClusterSize: cs})
	hwm := im.space.hwm.Load()
	gd.mu.Lock()
	first := gd.pieces[0][0]
	for _, p := range gd.pieces {
		first = min(first, p[0])
		if uint64(p[0]) < hwm {
			t.Errorf("fill piece %v below the high-water mark %d", p, hwm)
		}
	}
	gd.mu.Unlock()
	// Guest clusters 1.. go to host clusters in order from hwm: the
	// writer allocates through the gap and then reaches the first piece.
	n := (first-int64(hwm))/cs + 8
	done := make(chan error, 1)
	go func() {
		for c := int64(1); c <= n; c++ {
			p := pattern(cs/2, byte(c))
			if _, err := im.WriteAt(p, c*cs+cs/4); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	waitFor(t, "an allocation waiting for the fill", func() bool { return im.Metrics().FillWaits > 0 })
	select {
	case err := <-done:
		t.Fatalf("writer finished while its cluster's fill was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if got := im.space.hwm.Load(); got > uint64(first) {
		t.Fatalf("high-water mark %d moved into the held piece at %d", got, first)
	}
	close(gd.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for c := int64(1); c <= n; c++ {
		copy(shadow[c*cs+cs/4:], pattern(cs/2, byte(c)))
	}
	// More clusters, into space filled meanwhile.
	for c := n + 1; c < n+64; c++ {
		p := pattern(cs, byte(c))
		mustWrite(t, im, p, c*cs)
		copy(shadow[c*cs:], p)
	}
	im.waitFillIdle()
	m := im.Metrics()
	t.Logf("%d B filled, %d waits, hwm %d, first piece %d", m.FillBytes, m.FillWaits, im.space.hwm.Load(), first)
	if m.FillBytes == 0 || m.FillErrors != 0 {
		t.Fatalf("fill: %d B, %d errors", m.FillBytes, m.FillErrors)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "image vs shadow")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	reopenMatches(t, gd.Dev, shadow)
}

// TestFill_CloseWaitsForFill: Close with pieces in flight waits for
// them (no goroutine is left writing, nothing is written after Close,
// and the reserve is trimmed after the last zero write).
func TestFill_CloseWaitsForFill(t *testing.T) {
	im, gd, shadow := gateImage(t, CreateOptions{Size: 16 << 20})
	closed := make(chan error, 1)
	go func() { closed <- im.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned with fill writes in flight: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gd.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	gd.after.Store(true)
	if w := im.space.fill.workers; w != 0 {
		t.Fatalf("%d fill workers left after Close", w)
	}
	time.Sleep(10 * time.Millisecond)
	if n := gd.late.Load(); n != 0 {
		t.Fatalf("%d fill writes after Close", n)
	}
	if sz, _ := gd.Size(); uint64(sz) != im.space.hwm.Load() {
		t.Fatalf("device size %d after Close, want the high-water mark %d (reserve trimmed)", sz, im.space.hwm.Load())
	}
	reopenMatches(t, gd.Dev, shadow)
}

// failFillDev fails the filler's zero writes.
type failFillDev struct{ *memdev.Dev }

func (d failFillDev) Writev(off int64, bufs [][]byte) error {
	if isFillWrite(bufs) {
		return fmt.Errorf("injected fill failure at %d", off)
	}
	return d.Dev.Writev(off, bufs)
}

// TestFill_ErrorStopsFilling: a failed zero write turns filling off and
// nothing else: writes go on into the (unwritten) reserve.
func TestFill_ErrorStopsFilling(t *testing.T) {
	t.Parallel()
	mem := memdev.New(memdev.Options{Media: block.MediaSSD})
	if err := CreateDevice(mem, CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(failFillDev{mem}, Options{PreallocFill: FillZeroes})
	if err != nil {
		t.Fatal(err)
	}
	shadow := make([]byte, 64<<20)
	// One cluster per write: writes of several whole clusters would be
	// runs, for which the filler pauses (fill_bulk.go), maybe before
	// its first piece.
	for off := int64(0); off < 48<<20; off += 64 << 10 {
		p := pattern(64<<10, byte(off>>16))
		mustWrite(t, im, p, off)
		copy(shadow[off:], p)
	}
	im.waitFillIdle()
	m := im.Metrics()
	if m.FillErrors != 1 || m.FillBytes != 0 || im.space.fill.on {
		t.Fatalf("after failing fills: %d errors, %d B, on %v", m.FillErrors, m.FillBytes, im.space.fill.on)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "image vs shadow")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	mustClean(t, im2)
}

// TestFill_Stress is TestSeed_Stress's workload with zeroes on a real
// file: 64 writers on the same fresh clusters, early writes (Q10) and the
// filler all at once.
func TestFill_Stress(t *testing.T) {
	t.Parallel()
	const G = 64
	count := int64(8192) // 32 MiB
	if testing.Short() {
		count = 2048
	}
	for _, dv := range fillDevs {
		t.Run(dv.name, func(t *testing.T) {
			im, reopen := dv.open(t, CreateOptions{Size: 256 << 20}, Options{PreallocFill: FillZeroes})
			if err := seqWrite(im, G, 0, count, 4096); err != nil {
				t.Fatal(err)
			}
			verifySeq(t, im, 0, 0, count, 4096)
			im.waitFillIdle()
			m := im.Metrics()
			t.Logf("%v", m)
			if m.FillBytes == 0 {
				t.Error("nothing filled")
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			verifySeq(t, reopen(), 0, 0, count, 4096)
		})
	}
}

// TestFill_FileSizeBounded: fills never extend the file: after a run
// the file is no longer than the reserve (checked on a real file while
// open), and Close trims it to the last cluster.
func TestFill_FileSizeBounded(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "t.qcow2")
	if err := Create(p, CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{Opener: uringOpener(), PreallocFill: FillZeroes, PreallocSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < 20<<20; off += 64 << 10 {
		mustWrite(t, im, pattern(4096, byte(off>>16)), off)
	}
	im.waitFillIdle()
	im.mu.Lock()
	reserved := im.space.reserved
	im.mu.Unlock()
	im.space.fill.mu.Lock()
	next := im.space.fill.next
	im.space.fill.mu.Unlock()
	sz, _ := im.dev.Size()
	if uint64(sz) != reserved || next > reserved || im.Metrics().FillBytes == 0 {
		t.Fatalf("file size %d, reserved %d, filled to %d, %d B", sz, reserved, next, im.Metrics().FillBytes)
	}
	closeCheck(t, im, p)
}

// reopenMatches reopens dev read-only, checks it and compares it with shadow.
func reopenMatches(t *testing.T, dev block.Device, shadow []byte) {
	t.Helper()
	im, err := OpenDevice(dev, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustClean(t, im)
	testkit.MustEqual(t, testkit.ReadAll(t, im), shadow, "reopened image vs shadow")
}

// TestFill_SSDWriteAmplification: with the defaults, an SSD receives
// about the guest's bytes and no more (issue 19: write amplification at
// most about 1.2 on SSD-class media), for a sequential writer (the seed)
// and for one 4 KiB write per new cluster (allocation-heavy); on RAM the
// same sequential writer gets the zero fill, which is what makes the
// SSD figure a measurement and not an accident of the counters.
func TestFill_SSDWriteAmplification(t *testing.T) {
	const req = 4 << 10
	// Guest bytes: the seed's 32 MiB are 512 clusters; the allocation-
	// heavy 4 MiB are 1024 clusters over 64 MiB, well past the window the
	// filler claims before its first judgment (and small enough that the
	// memdev's copies stay small under -race).
	for _, tc := range []struct {
		name  string
		media block.Media
		step  int64
		guest int64
		check func(wa float64) bool
		want  string
	}{
		{"ssd-seed", block.MediaSSD, req, 32 << 20, func(wa float64) bool { return wa <= 1.2 }, "<= 1.2"},
		{"ssd-alloc", block.MediaSSD, 64 << 10, 4 << 20, func(wa float64) bool { return wa <= 1.2 }, "<= 1.2"},
		{"ram-seed", block.MediaRAM, req, 32 << 20, func(wa float64) bool { return wa >= 1.5 }, ">= 1.5 (the zero fill)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, mem := memImage(t, CreateOptions{Size: 256 << 20}, Options{}, memdev.Options{Media: tc.media})
			base := mem.M.BytesWritten.Load()
			p := pattern(req, 7)
			var guest int64
			for off := int64(0); guest < tc.guest; off += tc.step {
				mustWrite(t, im, p, off)
				guest += req
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			im.waitFillIdle()
			wa := float64(mem.M.BytesWritten.Load()-base) / float64(guest)
			t.Logf("%s: %d guest bytes, device received %.2fx (%s)", tc.name, guest, wa, im.Metrics().Prealloc)
			if !tc.check(wa) {
				t.Errorf("write amplification %.2f, want %s", wa, tc.want)
			}
		})
	}
}
