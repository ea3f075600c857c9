package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

func TestOffsetOf_Wrap(t *testing.T) {
	for _, tc := range []struct {
		first, step, size int64
		i                 uint64
		want              int64
	}{
		{0, 4096, 1 << 20, 0, 0},
		{0, 4096, 1 << 20, 255, 255 * 4096},
		{0, 4096, 1 << 20, 256, 0}, // QEMU 7.2: % size, not % (size - bufsize)
		{8192, 4096, 1 << 20, 255, 4096},
		{0, 0, 1 << 20, 99, 0},
		{0, 3 << 20, 1 << 20, 1, 0},
		{100, 7, 10, 3, 1},                // 100 -> (100+7)%10=7 -> 4 -> 1
		{0, 1 << 40, 1 << 41, 1 << 30, 0}, // i*step overflows int64
	} {
		if got := offsetOf(tc.first, tc.step, tc.size, tc.i); got != tc.want {
			t.Errorf("offsetOf(%d, %d, %d, %d) = %d, want %d", tc.first, tc.step, tc.size, tc.i, got, tc.want)
		}
	}
	// The closed form equals qemu's iteration.
	off := int64(12345)
	for i := uint64(0); i < 1000; i++ {
		if got := offsetOf(12345, 777, 100000, i); got != off {
			t.Fatalf("request %d: %d, want %d", i, got, off)
		}
		off = (off + 777) % 100000
	}
}

// countDev counts requests and records, for W2, the highest number of
// completed writes seen at each flush.
type countDev struct {
	block.Device
	writes  atomic.Int64
	mu      sync.Mutex
	atFlush []int64
}

func (d *countDev) Writev(off int64, b [][]byte) error {
	err := d.Device.Writev(off, b)
	d.writes.Add(1)
	return err
}

func (d *countDev) Flush() error {
	d.mu.Lock()
	d.atFlush = append(d.atFlush, d.writes.Load())
	d.mu.Unlock()
	return d.Device.Flush()
}

// TestRunOn_FlushIntervalDrains pins W2, for the workers and for the
// queue runner (Config.Queue).
func TestRunOn_FlushIntervalDrains(t *testing.T) {
	for _, queue := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue=%v", queue), func(t *testing.T) { testFlushIntervalDrains(t, queue) })
	}
}

func testFlushIntervalDrains(t *testing.T, queue bool) {
	dev := &countDev{Device: memdev.New(memdev.Options{})}
	if err := dev.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := RunOn(&imgopen.Opened{Dev: dev}, Config{Count: 1000, Depth: 8, Size: 512, Step: -1, Write: true,
		Pattern: 0x5a, FlushInterval: 100, Out: &out, Format: "raw", Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	// Interval flushes after 100..900, then the final flush after 1000.
	want := []int64{100, 200, 300, 400, 500, 600, 700, 800, 900, 1000}
	if len(dev.atFlush) != len(want) {
		t.Fatalf("flushes at %v, want %v", dev.atFlush, want)
	}
	for i := range want {
		if dev.atFlush[i] != want[i] {
			t.Fatalf("flushes at %v, want %v (a drained flush must see exactly k*N writes)", dev.atFlush, want)
		}
	}
	if res.Flushes != 9 || res.Latency.Count() != 1000 || res.Requests != 1000 {
		t.Errorf("flushes %d, latencies %d, requests %d", res.Flushes, res.Latency.Count(), res.Requests)
	}
	// As qemu-img bench, whose flushes fall where the requests not yet
	// sent are a multiple of the interval: counted back from the end
	// (after 100, 400, 700 here, not 300, 600, 900; review 53).
	dev2 := &countDev{Device: memdev.New(memdev.Options{})}
	if err := dev2.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := RunOn(&imgopen.Opened{Dev: dev2}, Config{Count: 1000, Depth: 8, Size: 512, Step: -1, Write: true,
		FlushInterval: 300, Out: io.Discard, Format: "raw", Queue: queue}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(dev2.atFlush); got != "[100 400 700 1000]" {
		t.Errorf("-c 1000 -d 8 --flush-interval 300: flushes after %s writes, want [100 400 700 1000] (qemu-img bench's)", got)
	}
	if !strings.Contains(out.String(), "Sending flush every 100 requests\n") ||
		!strings.Contains(out.String(), "Sending 1000 write requests, 512 bytes each, 8 in parallel (starting at offset 0, step size 512)\n") {
		t.Errorf("output:\n%s", out.String())
	}
	buf := make([]byte, 1<<20)
	if err := block.ReadAt(dev, buf, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000*512; i++ {
		if buf[i] != 0x5a {
			t.Fatalf("byte %d = %#x, want 0x5a", i, buf[i])
		}
	}
}

func TestRunOn_Qcow2Metrics(t *testing.T) {
	for _, queue := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue=%v", queue), func(t *testing.T) { testQcow2Metrics(t, queue) })
	}
}

func testQcow2Metrics(t *testing.T, queue bool) {
	dev := memdev.New(memdev.Options{})
	if err := qcow2.CreateDevice(dev, qcow2.CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := qcow2.OpenDevice(dev, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := im.Close(); err != nil {
			t.Error(err)
		}
		imgcheck.Mem(t, dev, qcow2.Options{})
	}()
	res, err := RunOn(&imgopen.Opened{Dev: im, Image: im}, Config{Count: 2048, Depth: 4, Write: true, Step: -1, Pattern: 1, Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	if res.Engine == nil || res.Engine.ClustersAllocated != 2048*4096/(64<<10) {
		t.Fatalf("engine metrics %+v", res.Engine)
	}
	if res.Uring != nil {
		t.Errorf("uring metrics without a uring file")
	}
	b, err := res.MarshalJSON()
	if err != nil || !bytes.Contains(b, []byte(`"clusters_allocated":128`)) || bytes.Contains(b, []byte("uring_enters")) {
		t.Errorf("json %s, %v", b, err)
	}
}

// discardWrites is memdev with writes dropped: memdev.Writev allocates (it
// keeps each write for CrashClone), which would hide the loop's own count.
type discardWrites struct{ *memdev.Dev }

func (discardWrites) Writev(int64, [][]byte) error { return nil }

// nullReads is memdev with reads that do nothing: memdev.Readv allocates
// too (the release closure of its range lock).
type nullReads struct{ *memdev.Dev }

func (nullReads) Readv(int64, [][]byte) error { return nil }

// TestRun_AllocsPerRequest pins W1: the per-request path allocates nothing.
func TestRun_AllocsPerRequest(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := mem.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	for _, write := range []bool{false, true} {
		var dev block.Device = nullReads{mem}
		if write {
			dev = discardWrites{mem}
		}
		cfg := Config{File: "-", Write: write, FlushInterval: 0, Format: "raw"}
		if err := cfg.Resolve(); err != nil {
			t.Fatal(err)
		}
		r := &runner{cfg: &cfg, dev: dev, size: 1 << 20}
		r.cond.L = &r.mu
		w := &worker{r: r, vec: [][]byte{block.AlignedBuf(4096, 4096)}}
		var i uint64
		if n := testing.AllocsPerRun(1000, func() {
			if err := w.one(i); err != nil {
				t.Fatal(err)
			}
			i++
		}); n != 0 {
			t.Errorf("write=%v: %v allocations per request", write, n)
		}
	}
}

func BenchmarkWorker_One(b *testing.B) {
	mem := memdev.New(memdev.Options{})
	mem.Truncate(1 << 20)
	dev := discardWrites{mem}
	cfg := Config{File: "-", Write: true, Format: "raw"}
	cfg.Resolve()
	r := &runner{cfg: &cfg, dev: dev, size: 1 << 20}
	w := &worker{r: r, vec: [][]byte{block.AlignedBuf(4096, 4096)}}
	b.ReportAllocs()
	b.SetBytes(4096)
	var i uint64
	for b.Loop() {
		w.one(i)
		i++
	}
}

func TestRunOn_CacheModesFlush(t *testing.T) {
	for _, tc := range []struct {
		cache   string
		flushes int
	}{
		{"writeback", 1},         // the final flush only
		{"writethrough", 64 + 1}, // FUA emulated by a flush per write
		{"unsafe", 0},            // flushes ignored
	} {
		for _, queue := range []bool{false, true} {
			dev := &countDev{Device: memdev.New(memdev.Options{})}
			dev.Truncate(1 << 20)
			_, err := RunOn(&imgopen.Opened{Dev: dev}, Config{Count: 64, Depth: 4, Write: true, Step: -1, Cache: tc.cache, Format: "raw", Queue: queue})
			if err != nil {
				t.Fatal(err)
			}
			if len(dev.atFlush) != tc.flushes {
				t.Errorf("-t %s, queue %v: %d flushes, want %d", tc.cache, queue, len(dev.atFlush), tc.flushes)
			}
		}
	}
	// Without drain, a queue runner's interval flush goes in beside the
	// writes: nine of them, each after at least k*N writes completed.
	dev := &countDev{Device: memdev.New(memdev.Options{})}
	dev.Truncate(1 << 20)
	res, err := RunOn(&imgopen.Opened{Dev: dev}, Config{Count: 1000, Depth: 8, Size: 512, Step: -1, Write: true,
		FlushInterval: 100, NoDrain: true, Format: "raw", Queue: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Flushes != 9 || len(dev.atFlush) != 10 {
		t.Fatalf("no-drain queue run: %d interval flushes, %d device flushes (%v)", res.Flushes, len(dev.atFlush), dev.atFlush)
	}
	for k, at := range dev.atFlush[:9] {
		if at < int64(k+1)*100 {
			t.Fatalf("flush %d saw %d writes done, want at least %d", k+1, at, (k+1)*100)
		}
	}
}

// slowFill delays the fill workers' zero pieces (in these runs the only
// writes larger than a cluster) and counts the bytes they wrote.
type slowFill struct {
	block.Device
	delay   time.Duration
	started atomic.Int64 // fill pieces begun
	filled  atomic.Int64
}

func (d *slowFill) Writev(off int64, b [][]byte) error {
	n := 0
	for _, x := range b {
		n += len(x)
	}
	if n <= SeedClusterSize {
		return d.Device.Writev(off, b)
	}
	d.started.Add(1)
	time.Sleep(d.delay)
	err := d.Device.Writev(off, b)
	if err == nil {
		d.filled.Add(int64(n))
	}
	return err
}

// TestRun_FillCountedToClose: with prealloc-fill=zeroes the fill workers
// go on streaming zeros after the last request until Close stops them
// (waiting for the pieces in flight); the report gives all they wrote,
// and the part written after the last request. The host device delays
// each piece, so that pieces are in flight when the run ends.
func TestRun_FillCountedToClose(t *testing.T) {
	host := &slowFill{delay: 30 * time.Millisecond}
	testHookHostDev = func(d block.Device) block.Device {
		host.Device = d
		return host
	}
	defer func() { testHookHostDev = nil }()
	// On a loaded machine the 64 requests can end before the filler has
	// begun its first piece (nothing filled at all, or nothing after the
	// last request), as in TestRunOn_ClosedCountsFill: the last Progress
	// call, after the run and before Close, waits for it.
	fillBegun := func(done, total int64, _ time.Duration) {
		if done < total {
			return
		}
		for deadline := time.Now().Add(10 * time.Second); host.started.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	var out bytes.Buffer
	res, err := Run(Config{Dir: t.TempDir(), Count: 64, Depth: 4, Step: -1, Cache: "writeback",
		Engine: qcow2.Options{PreallocFill: qcow2.FillZeroes}, Out: &out, Progress: fillBegun})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Engine
	if m == nil || m.Prealloc.Fill != qcow2.FillZeroes {
		t.Fatalf("engine metrics %+v", m)
	}
	filled := host.filled.Load()
	if filled == 0 {
		t.Fatal("the engine filled nothing")
	}
	if m.FillBytes != filled || m.FillErrors != 0 {
		t.Errorf("reported %d bytes zeroed ahead (%d errors); the fill wrote %d by Close", m.FillBytes, m.FillErrors, filled)
	}
	if !res.FillFinal || res.FillAfterRun <= 0 || res.FillAfterRun > m.FillBytes {
		t.Errorf("fill after the last request %d of %d (final %v)", res.FillAfterRun, m.FillBytes, res.FillFinal)
	}
	var sum bytes.Buffer
	res.WriteSummary(&sum)
	want := fmt.Sprintf("; %d MiB zeroed ahead (%d MiB after the last request), %d allocation waits",
		m.FillBytes>>20, res.FillAfterRun>>20, m.FillWaits)
	if !strings.Contains(sum.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, sum.String())
	}
	b, err := res.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Engine map[string]float64 `json:"engine"` // some are fractions
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	if j.Engine["fill_bytes"] != float64(filled) {
		t.Errorf("json fill_bytes %v, want %d", j.Engine["fill_bytes"], filled)
	}
	if a, ok := j.Engine["fill_bytes_after_last_request"]; !ok || a != float64(res.FillAfterRun) {
		t.Errorf("json fill_bytes_after_last_request %v (present %v), want %d", a, ok, res.FillAfterRun)
	}
}

// TestRunOn_ClosedCountsFill: a caller of RunOn gets the fill counted to
// Close through Result.Closed, equal to the engine's counters read after
// Close (Image.Metrics is safe then), and the JSON says which part came
// after the last request; before Closed the counters are provisional.
func TestRunOn_ClosedCountsFill(t *testing.T) {
	dev := memdev.New(memdev.Options{})
	if err := qcow2.CreateDevice(dev, qcow2.CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	host := &slowFill{Device: dev, delay: 20 * time.Millisecond}
	im, err := qcow2.OpenDevice(host, qcow2.Options{PreallocFill: qcow2.FillZeroes})
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunOn(&imgopen.Opened{Dev: im, Image: im}, Config{Count: 64, Depth: 4, Write: true, Step: -1})
	if err != nil {
		im.Close()
		t.Fatal(err)
	}
	if res.Engine.Prealloc.Fill != qcow2.FillZeroes {
		im.Close()
		t.Skipf("no fill on memdev: %s", res.Engine.Prealloc)
	}
	if b, _ := res.MarshalJSON(); bytes.Contains(b, []byte("fill_bytes_after_last_request")) {
		t.Errorf("fill after the last request reported before Close: %s", b)
	}
	// On a loaded machine the 64 requests can end before the filler
	// has begun its first piece (once: nothing filled at all).
	for deadline := time.Now().Add(10 * time.Second); host.started.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	imgcheck.Mem(t, dev, qcow2.Options{})
	closed := im.Metrics()
	before := *res.Engine
	res.Closed(im)
	res.Closed(im) // a second call changes nothing
	m := res.Engine
	if !res.FillFinal || m.FillBytes != closed.FillBytes || m.FillBytes != host.filled.Load() ||
		m.FillWaits != closed.FillWaits || m.FillErrors != closed.FillErrors {
		t.Errorf("fill %d bytes, %d waits, %d errors (final %v); engine after Close %d, %d, %d; host %d",
			m.FillBytes, m.FillWaits, m.FillErrors, res.FillFinal, closed.FillBytes, closed.FillWaits, closed.FillErrors, host.filled.Load())
	}
	if res.FillAfterRun <= 0 || res.FillAfterRun > m.FillBytes {
		t.Errorf("fill after the last request %d of %d", res.FillAfterRun, m.FillBytes)
	}
	// The other counters stay those of the run and final flush.
	after := *m
	after.FillBytes, after.FillWaits, after.FillErrors = before.FillBytes, before.FillWaits, before.FillErrors
	if after != before {
		t.Errorf("Closed changed more than the fill counters:\n%+v\n%+v", before, *m)
	}
}

// inlineQueue completes every request at Submit, without allocating: it
// isolates the queue runner's own allocations.
type inlineQueue struct {
	done   []*block.Req
	flight int
}

func (q *inlineQueue) Submit(reqs ...*block.Req) error {
	q.done = append(q.done, reqs...)
	q.flight += len(reqs)
	return nil
}

func (q *inlineQueue) Wait(out []*block.Req, _ int) (int, error) {
	k := copy(out, q.done)
	n := copy(q.done, q.done[k:])
	q.done = q.done[:n]
	q.flight -= k
	return k, nil
}

func (q *inlineQueue) Wake()         {}
func (q *inlineQueue) InFlight() int { return q.flight }
func (q *inlineQueue) Close() error  { return nil }

// TestRun_QueueAllocsPerRequest pins W1 for the queue runner: a run of
// 64k requests allocates nothing per request.
func TestRun_QueueAllocsPerRequest(t *testing.T) {
	const count = 1 << 16
	cfg := Config{File: "-", Write: true, Format: "raw", Queue: true, Count: count, Step: -1}
	if err := cfg.Resolve(); err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: &cfg, size: 1 << 30}
	q := &inlineQueue{done: make([]*block.Req, 0, 2*cfg.Depth)}
	qr := newQueueRunner(r, q, 0)
	n := testing.AllocsPerRun(1, func() {
		if err := qr.run(); err != nil {
			t.Fatal(err)
		}
	})
	if n > 16 {
		t.Errorf("%v allocations in a run of %d requests", n, count)
	}
	if qr.hist.Count() < count {
		t.Errorf("%d latencies recorded, want %d", qr.hist.Count(), count)
	}
}

// slowFlush is memdev with a flush that takes a while, so that interval
// flushes without drain overlap.
type slowFlush struct{ *memdev.Dev }

func (d slowFlush) Flush() error {
	time.Sleep(5 * time.Millisecond)
	return d.Dev.Flush()
}

// TestRunOn_QueueNoDrainSlowFlush: with the queue, interval flushes
// without drain that come due while the last one is still out wait for
// it, instead of overfilling the queue.
func TestRunOn_QueueNoDrainSlowFlush(t *testing.T) {
	dev := slowFlush{memdev.New(memdev.Options{})}
	dev.Truncate(1 << 20)
	res, err := RunOn(&imgopen.Opened{Dev: dev}, Config{Count: 800, Depth: 8, Size: 512, Step: -1, Write: true,
		FlushInterval: 8, NoDrain: true, Format: "raw", Queue: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Flushes != 99 || res.Latency.Count() != 800 {
		t.Fatalf("%d interval flushes, %d latencies", res.Flushes, res.Latency.Count())
	}
}
