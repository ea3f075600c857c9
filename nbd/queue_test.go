package nbd

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

// queueDev is a memdev with a queue of its own (block.Queuer): a
// GoQueue that counts the requests it is given and can be made to fail.
type queueDev struct {
	*memdev.Dev
	refuse    bool  // NewQueue: ErrNotSupported
	waitErr   error // Wait fails with it once failAfter requests completed
	failAfter int64
	panicWait bool // Wait panics instead

	submitted [opCount]atomic.Int64
	completed atomic.Int64
	opened    atomic.Int32
	open      atomic.Int32 // queues not closed yet
}

// opCount bounds block.Op values for the counters.
const opCount = 8

func (d *queueDev) NewQueue(depth int) (block.Queue, error) {
	if d.refuse {
		return nil, block.ErrNotSupported
	}
	q, err := block.NewGoQueue(d.Dev, depth)
	if err != nil {
		return nil, err
	}
	d.opened.Add(1)
	d.open.Add(1)
	return &countQueue{GoQueue: q, d: d}, nil
}

type countQueue struct {
	*block.GoQueue
	d *queueDev
}

func (q *countQueue) Submit(reqs ...*block.Req) error {
	for _, r := range reqs {
		q.d.submitted[r.Op].Add(1)
	}
	return q.GoQueue.Submit(reqs...)
}

func (q *countQueue) Wait(out []*block.Req, atLeast int) (int, error) {
	if q.d.panicWait {
		panic("queue boom")
	}
	n, err := q.GoQueue.Wait(out, atLeast)
	if q.d.waitErr != nil && q.d.completed.Add(int64(n)) >= q.d.failAfter {
		return n, q.d.waitErr
	}
	return n, err
}

func (q *countQueue) Close() error {
	q.d.open.Add(-1)
	return q.GoQueue.Close()
}

func newQueueDev() *queueDev { return &queueDev{Dev: newMem(memdev.Options{})} }

// TestQueuedPath: on a device with a queue of its own, READ and WRITE go
// through one queue per connection (not the device's synchronous
// methods on workers), the rest through the workers, with the same
// replies either way; the queue is closed when the connection ends, before
// Shutdown returns (a qcow2 image refuses to close under an open queue).
func TestQueuedPath(t *testing.T) {
	for _, structured := range []bool{false, true} {
		d := newQueueDev()
		mem := newMem(memdev.Options{})
		block.WriteAt(d, bytes.Repeat([]byte{9}, testSize), 0)
		block.WriteAt(mem, bytes.Repeat([]byte{9}, testSize), 0)
		st := fakeStatus{period: 65536, data: 16384}
		srv := &Server{Exports: []*Export{{Dev: d, Status: st}, {Name: "plain", Dev: mem, Status: st}}, Logf: t.Logf}
		s := serveTest(t, srv)
		for _, name := range []string{"", "plain"} {
			c := dial(t, s)
			if structured {
				c.connect(name, true, "base:allocation")
			} else {
				c.connect(name, false)
			}
			data := pattern(8192, 3)
			if code, _, _ := c.do(cmdWrite, 0, 4096, 8192, data); code != 0 {
				t.Fatalf("%q: write: %d", name, code)
			}
			if code, _, _ := c.do(cmdWrite, cmdFlagFUA, 65536, 3, []byte{1, 2, 3}); code != 0 {
				t.Fatalf("%q: FUA write: %d", name, code)
			}
			code, got, chunks := c.do(cmdRead, 0, 4096, 8192, nil)
			if code != 0 || !bytes.Equal(got, data) {
				t.Fatalf("%q: read back: code %d, equal %v", name, code, bytes.Equal(got, data))
			}
			if structured && (len(chunks) != 1 || chunks[0].typ != replyOffsetData || chunks[0].flags&replyFlagDone == 0) {
				t.Fatalf("%q: data read: %+v", name, chunks)
			}
			// Across a hole: OFFSET_HOLE chunks with structured replies.
			code, got, chunks = c.do(cmdRead, 0, 8192, 16384, nil)
			if code != 0 || !bytes.Equal(got[:4096], data[4096:]) {
				t.Fatalf("%q: read across a hole: %d", name, code)
			}
			if structured && len(chunks) != 2 {
				t.Fatalf("%q: read across a hole: %d chunks", name, len(chunks))
			}
			if code, _, _ := c.do(cmdWriteZeroes, 0, 0, 4096, nil); code != 0 {
				t.Fatalf("%q: write zeroes: %d", name, code)
			}
			if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
				t.Fatalf("%q: flush: %d", name, code)
			}
			if code, _, _ := c.do(cmdRead, 0, testSize, 1, nil); code != errInval {
				t.Fatalf("%q: read past the end: %d", name, code)
			}
			if code, _, _ := c.do(cmdWrite, 0, testSize-1, 2, []byte{1, 2}); code != errNoSpc {
				t.Fatalf("%q: write past the end: %d", name, code)
			}
		}
		if !bytes.Equal(d.Bytes(), mem.Bytes()) {
			t.Fatal("the queued device and the plain one differ")
		}
		// Queued: the WRITE and the data READ; a structured connection
		// sends the READ across a hole to a worker.
		wantReads := int64(2)
		if structured {
			wantReads = 1
		}
		if w, r := d.submitted[block.OpWrite].Load(), d.submitted[block.OpRead].Load(); w != 1 || r != wantReads {
			t.Errorf("structured %v: %d writes, %d reads queued; want 1, %d", structured, w, r, wantReads)
		}
		if m := d.M.Flushes.Load(); m != 2 {
			t.Errorf("structured %v: %d flushes, want 2 (FUA, FLUSH)", structured, m)
		}
		if err := srv.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d.opened.Load() != 1 || d.open.Load() != 0 {
			t.Fatalf("%d queues opened, %d open after Shutdown", d.opened.Load(), d.open.Load())
		}
	}
}

// TestQueuedPipelined: many requests in flight on a queued connection,
// more than the budget, mixed with flushes and zeroings on the workers.
func TestQueuedPipelined(t *testing.T) {
	d := newQueueDev()
	s := serveTest(t, &Server{Exports: []*Export{{Dev: d, Status: fakeStatus{period: 1 << 30, data: 1 << 30}}}, MaxInFlight: 8, Logf: t.Logf})
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Go(func() {
			c := dial(t, s)
			c.connect("", k%2 == 0, "base:allocation")
			const n = 300
			base := uint64(k) * testSize / 4
			go func() {
				for i := range n {
					off := base + uint64(i%30)*4096
					c.request(cmdWrite, 0, uint64(3*i), off, 4096, bytes.Repeat([]byte{byte(k + 1)}, 4096))
					c.request(cmdRead, 0, uint64(3*i+1), off, 4096, nil)
					if i%10 == 0 {
						c.request(cmdFlush, 0, uint64(3*i+2), 0, 0, nil)
					} else {
						c.request(cmdWriteZeroes, 0, uint64(3*i+2), base+200<<10, 512, nil)
					}
				}
			}()
			seen := map[uint64]bool{}
			for len(seen) < 3*n {
				ch, err := c.tryReply(func(cookie uint64) int {
					if cookie%3 == 1 {
						return 4096
					}
					return 0
				})
				if err != nil {
					t.Error(err)
					return
				}
				if ch.cookie%3 == 1 && ch.err == 0 {
					b := ch.data
					if !ch.simple {
						b = b[8:]
					}
					if b[0] != byte(k+1) && b[0] != 0 {
						t.Errorf("conn %d read %d", k, b[0])
					}
				}
				if ch.err != 0 || seen[ch.cookie] {
					t.Errorf("conn %d: reply %+v (seen %v)", k, ch, seen[ch.cookie])
				}
				seen[ch.cookie] = true
			}
		})
	}
	wg.Wait()
	if w := d.submitted[block.OpWrite].Load(); w != 4*300 {
		t.Errorf("%d writes queued, want %d", w, 4*300)
	}
}

// TestQueueRefused: a device whose queue is not available (a uring.File
// on the threads backend) serves everything on the workers.
func TestQueueRefused(t *testing.T) {
	d := newQueueDev()
	d.refuse = true
	s := newTestServer(t, &Export{Dev: d})
	c := dial(t, s)
	c.connect("", true)
	if code, _, _ := c.do(cmdWrite, 0, 0, 3, []byte{1, 2, 3}); code != 0 {
		t.Fatalf("write: %d", code)
	}
	if code, got, _ := c.do(cmdRead, 0, 0, 3, nil); code != 0 || !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("read: %d %v", code, got)
	}
}

// TestQueueFailure: a queue that fails (Wait returns an error: the ring
// is unusable) or panics closes the connection, with the error logged;
// the server neither hangs nor crashes, and the other connections go on.
func TestQueueFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(d *queueDev)
		log  string
	}{
		{"error", func(d *queueDev) { d.waitErr, d.failAfter = errors.New("ring broke"), 3 }, "ring broke"},
		{"panic", func(d *queueDev) { d.panicWait = true }, "queue boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newQueueDev()
			tc.set(d)
			var mu sync.Mutex
			var logs []string
			srv := &Server{Exports: []*Export{{Dev: d}, {Name: "plain", Dev: newMem(memdev.Options{})}}, MaxInFlight: 4,
				Logf: func(f string, a ...any) {
					mu.Lock()
					logs = append(logs, fmt.Sprintf(f, a...))
					mu.Unlock()
				}}
			s := serveTest(t, srv)
			c := dial(t, s)
			c.connect("", false)
			go func() {
				// Raw writes: the server closes the connection midway.
				for i := range 50 {
					if c.tryRequest(cmdWrite, 0, uint64(i), 0, 512, make([]byte, 512)) != nil {
						return
					}
				}
			}()
			for {
				if _, err := c.tryReply(func(uint64) int { return 0 }); err != nil {
					break // closed
				}
			}
			other := dial(t, s)
			other.connect("plain", false)
			if code, _, _ := other.do(cmdFlush, 0, 0, 0, nil); code != 0 {
				t.Fatalf("flush on another connection: %d", code)
			}
			if err := srv.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if all := strings.Join(logs, "\n"); !strings.Contains(all, tc.log) {
				t.Fatalf("log %q does not say %q", all, tc.log)
			}
		})
	}
}

// pageStatus reports data throughout, in extents of one 4 KiB page.
type pageStatus struct{}

func (pageStatus) Extent(off, n int64) (Extent, error) {
	return Extent{Len: min(n, 4096-off%4096), Depth: 1}, nil
}

// TestQueuedReadAcrossExtents: a structured READ over several data
// extents is still one OFFSET_DATA chunk, read through the queue.
func TestQueuedReadAcrossExtents(t *testing.T) {
	d := newQueueDev()
	data := pattern(testSize, 5)
	block.WriteAt(d, data, 0)
	s := newTestServer(t, &Export{Dev: d, Status: pageStatus{}})
	c := dial(t, s)
	c.connect("", true, "base:allocation")
	code, got, chunks := c.do(cmdRead, 0, 1000, 20000, nil)
	if code != 0 || !bytes.Equal(got, data[1000:21000]) {
		t.Fatalf("read: code %d, equal %v", code, bytes.Equal(got, data[1000:21000]))
	}
	if len(chunks) != 1 || chunks[0].typ != replyOffsetData {
		t.Fatalf("%d chunks, first of type %d", len(chunks), chunks[0].typ)
	}
	if r := d.submitted[block.OpRead].Load(); r != 1 {
		t.Fatalf("%d reads queued, want 1", r)
	}
}

// TestQueuedQcow2: a qcow2 image is served through its own queue (its
// counters show the queued requests), pipelined reads see the pipelined
// writes, and once Shutdown returned the image closes (an open queue
// would make Close fail with ErrQueueOpen).
func TestQueuedQcow2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: testSize, ClusterSize: 65536}); err != nil {
		t.Fatal(err)
	}
	im, err := qcow2.Open(path, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Exports: []*Export{{Dev: im}}, Logf: t.Logf}
	s := serveTest(t, srv)
	c := dial(t, s)
	c.connect("", true)
	const n = 64
	go func() {
		for i := range n {
			c.request(cmdWrite, 0, uint64(i), uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096))
		}
	}()
	for range n {
		if ch := c.readReply(0); ch.err != 0 {
			t.Fatalf("write %d: error %d", ch.cookie, ch.err)
		}
	}
	go func() {
		for i := range n {
			c.request(cmdRead, 0, uint64(i), uint64(i)*4096, 4096, nil)
		}
	}()
	for range n {
		ch := c.readReply(0)
		if ch.err != 0 || ch.typ != replyOffsetData || len(ch.data) != 8+4096 {
			t.Fatalf("read %d: %+v", ch.cookie, ch)
		}
		if want := bytes.Repeat([]byte{byte(ch.cookie + 1)}, 4096); !bytes.Equal(ch.data[8:], want) {
			t.Fatalf("read %d: wrong data", ch.cookie)
		}
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	m := im.Metrics()
	if err := im.Close(); err != nil {
		t.Fatalf("close after Shutdown: %v", err)
	}
	if q := m.QueueFast + m.QueueAlloc + m.QueueSlow; q < 2*n || m.QueueFast < n {
		t.Fatalf("the image's queue took %d requests (fast %d, alloc %d, slow %d), want the %d reads fast and the %d writes", q, m.QueueFast, m.QueueAlloc, m.QueueSlow, n, n)
	}
	imgcheck.File(t, path, qcow2.Options{})
}
