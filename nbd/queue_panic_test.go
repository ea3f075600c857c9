package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

// armedPanicDev is a memdev whose reads panic while armed.
type armedPanicDev struct {
	*memdev.Dev
	armed atomic.Bool
}

func (d *armedPanicDev) Readv(off int64, bufs [][]byte) error {
	if d.armed.Load() {
		panic("read boom")
	}
	return d.Dev.Readv(off, bufs)
}

// goQueuer gives a device a queue of its own: a GoQueue over it, so
// that its requests run on the queue's goroutines, not on workers.
type goQueuer struct{ block.Device }

func (d goQueuer) NewQueue(depth int) (block.Queue, error) { return block.NewGoQueue(d.Device, depth) }

// logSink collects a server's log lines.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(f string, a ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
	l.mu.Unlock()
}

func (l *logSink) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(strings.Join(l.lines, "\n"), s)
}

// TestQueuedPanicIsEIO: a panic in a device method run on the device
// queue's goroutines answers that READ with EIO and is logged, as on a
// worker (TestPanicIsEIO); the connection and the process go on.
func TestQueuedPanicIsEIO(t *testing.T) {
	d := &armedPanicDev{Dev: newMem(memdev.Options{})}
	var logs logSink
	srv := &Server{Exports: []*Export{{Dev: goQueuer{d}}}, Logf: logs.logf}
	s := serveTest(t, srv)
	c := dial(t, s)
	c.connect("", false)
	if code, _, _ := c.do(cmdWrite, 0, 0, 4, []byte{1, 2, 3, 4}); code != 0 {
		t.Fatalf("write: %d", code)
	}
	d.armed.Store(true)
	if code, _, _ := c.do(cmdRead, 0, 0, 4, nil); code != errIO {
		t.Fatalf("panicking read: %d, want EIO", code)
	}
	d.armed.Store(false)
	if code, got, _ := c.do(cmdRead, 0, 0, 4, nil); code != 0 || !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatalf("read after the panic: %d %v", code, got)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !logs.has("read boom") {
		t.Fatal("the panic was not logged")
	}
}

// TestQueuedQcow2PanicIsEIO: the same under a qcow2 image, whose queue
// runs its device's reads on that device's GoQueue; afterwards the image
// takes a discard and closes (nothing of the failed read holds its data
// gate or its queue), and qemu-img finds it clean.
func TestQueuedQcow2PanicIsEIO(t *testing.T) {
	d := &armedPanicDev{Dev: memdev.New(memdev.Options{})}
	im := createImage(t, d, qcow2.CreateOptions{Size: testSize, ClusterSize: 65536})
	want := pattern(8192, 3)
	if err := block.WriteAt(im, want, 0); err != nil {
		t.Fatal(err)
	}
	var logs logSink
	srv := &Server{Exports: []*Export{{Dev: im}}, Logf: logs.logf}
	s := serveTest(t, srv)
	c := dial(t, s)
	c.connect("", false)
	d.armed.Store(true)
	if code, _, _ := c.do(cmdRead, 0, 0, 4096, nil); code != errIO {
		t.Fatalf("panicking read: %d, want EIO", code)
	}
	d.armed.Store(false)
	if code, got, _ := c.do(cmdRead, 0, 0, 8192, nil); code != 0 || !bytes.Equal(got, want) {
		t.Fatalf("read after the panic: %d, equal %v", code, bytes.Equal(got, want))
	}
	if code, _, _ := c.do(cmdWrite, 0, 4*65536, 4096, want[:4096]); code != 0 {
		t.Fatalf("allocating write after the panic: %d", code)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !logs.has("read boom") {
		t.Fatal("the panic was not logged")
	}
	mustReturn(t, "discard", func() error { return im.Discard(0, 65536) })
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	imgcheck.Mem(t, d.Dev, qcow2.Options{})
}

// panicStatus panics on every lookup.
type panicStatus struct{}

func (panicStatus) Extent(off, n int64) (Extent, error) { panic("status boom") }

// TestQueuedStatusPanic: a status source that panics while the reader
// decides whether a structured READ can be queued fails that READ with
// EIO (the worker looks again and recovers), and the connection goes on.
func TestQueuedStatusPanic(t *testing.T) {
	d := newQueueDev()
	s := newTestServer(t, &Export{Dev: d, Status: panicStatus{}})
	c := dial(t, s)
	c.connect("", true)
	if code, _, _ := c.do(cmdRead, 0, 0, 4096, nil); code != errIO {
		t.Fatalf("read with a panicking status: %d, want EIO", code)
	}
	if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
		t.Fatalf("flush after the panic: %d (connection closed?)", code)
	}
}

// panicWaitImage is a qcow2 image whose queues panic in one Wait, after
// requests were submitted (a bug in the queued path).
type panicWaitImage struct {
	*qcow2.Image
	armed atomic.Bool
}

func (im *panicWaitImage) NewQueue(depth int) (block.Queue, error) {
	q, err := im.Image.NewQueue(depth)
	if err != nil {
		return nil, err
	}
	return &panicWaitQueue{Queue: q, im: im}, nil
}

type panicWaitQueue struct {
	block.Queue
	im *panicWaitImage
}

func (q *panicWaitQueue) Wait(out []*block.Req, atLeast int) (int, error) {
	if q.Queue.InFlight() > 0 && q.im.armed.Swap(false) {
		panic("wait boom")
	}
	return q.Queue.Wait(out, atLeast)
}

// TestQueueAbandonReleasesQueue: after a panic in the queued path the
// connection closes, and the owner still drains and closes the image's
// queue: a discard does not wait forever for the data gate its reads
// held, and the image closes (an open queue: ErrQueueOpen).
func TestQueueAbandonReleasesQueue(t *testing.T) {
	d := memdev.New(memdev.Options{})
	img := createImage(t, d, qcow2.CreateOptions{Size: testSize, ClusterSize: 65536})
	if err := block.WriteAt(img, pattern(testSize/2, 4), 0); err != nil {
		t.Fatal(err)
	}
	im := &panicWaitImage{Image: img}
	im.armed.Store(true)
	var logs logSink
	srv := &Server{Exports: []*Export{{Dev: im}}, Logf: logs.logf}
	s := serveTest(t, srv)
	c := dial(t, s)
	c.connect("", false)
	go func() {
		// The server closes the connection midway.
		for i := range 16 {
			if c.tryRequest(cmdRead, 0, uint64(i), uint64(i)*4096, 4096, nil) != nil {
				return
			}
		}
	}()
	for {
		if _, err := c.tryReply(func(uint64) int { return 4096 }); err != nil {
			break // closed
		}
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !logs.has("wait boom") {
		t.Fatal("the panic was not logged")
	}
	mustReturn(t, "discard", func() error { return img.Discard(0, 65536) })
	if err := img.Close(); err != nil {
		t.Fatalf("close after the abandoned queue: %v", err)
	}
	imgcheck.Mem(t, d, qcow2.Options{})
}

// mustReturn fails the test if fn errs or has not returned in 10 s.
func mustReturn(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(ioGuard): // a hang guard (it was 10 s)
		t.Fatalf("%s has not returned in %v", what, ioGuard)
	}
}

// submitPanicDev is a memdev with a queue of its own (the device under a
// qcow2 image, as a uring.File is) whose Submit panics once while armed.
type submitPanicDev struct {
	*memdev.Dev
	armed atomic.Bool
}

func (d *submitPanicDev) NewQueue(depth int) (block.Queue, error) {
	q, err := block.NewGoQueue(d.Dev, depth)
	if err != nil {
		return nil, err
	}
	return &submitPanicQueue{GoQueue: q, d: d}, nil
}

type submitPanicQueue struct {
	*block.GoQueue
	d *submitPanicDev
}

func (q *submitPanicQueue) Submit(reqs ...*block.Req) error {
	if q.d.armed.Swap(false) {
		panic("submit boom")
	}
	return q.GoQueue.Submit(reqs...)
}

// TestQueueSubmitPanicUnderQcow2: a panic in the Submit of the queue of
// the device under a qcow2 image leaves the image's queue counting a read
// that never completes. The connection closes and the owner leaves that
// read to finishQueue after drainLimit, so Shutdown returns when its
// context ends (it waited forever). The image's queue stays open and its data gate held: that is
// left (nbd/doc.go).
func TestQueueSubmitPanicUnderQcow2(t *testing.T) {
	defer func(d time.Duration) { drainLimit = d }(drainLimit)
	drainLimit = 200 * time.Millisecond
	d := &submitPanicDev{Dev: memdev.New(memdev.Options{})}
	img := createImage(t, d, qcow2.CreateOptions{Size: testSize, ClusterSize: 65536})
	if err := block.WriteAt(img, pattern(testSize/2, 4), 0); err != nil {
		t.Fatal(err)
	}
	var logs logSink
	srv := &Server{Exports: []*Export{{Dev: img}}, Logf: logs.logf}
	s := serveNoCleanup(t, srv)
	c := dial(t, s)
	c.connect("", false)
	d.armed.Store(true)
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	if _, err := c.tryReply(func(uint64) int { return 4096 }); err == nil {
		t.Fatal("a reply to the read whose submission panicked")
	}
	// Shutdown waits for the read left draining until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	mustReturn(t, "shutdown", func() error {
		if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("Shutdown: %v, want its context's end", err)
		}
		return nil
	})
	if !logs.has("submit boom") || !logs.has("still in flight") {
		t.Fatalf("log: %q", logs.lines)
	}
}

// serveNoCleanup is serveTest without the Shutdown in cleanup, for tests
// that shut down themselves and would hang in a cleanup's Shutdown if
// theirs failed.
func serveNoCleanup(t testing.TB, s *Server) *testServer {
	addr := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	return &testServer{s, addr}
}

// createImage creates a qcow2 image on d and opens it.
func createImage(t testing.TB, d block.Device, o qcow2.CreateOptions) *qcow2.Image {
	t.Helper()
	if err := qcow2.CreateDevice(d, o); err != nil {
		t.Fatal(err)
	}
	im, err := qcow2.OpenDevice(d, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return im
}
