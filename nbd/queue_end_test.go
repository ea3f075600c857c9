package nbd

import (
	"bufio"
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2"
)

// waitFailDev: a memdev (the device under a qcow2 image) whose queue's
// Wait fails once while armed, and whose reads take `delay` while slow.
type waitFailDev struct {
	*memdev.Dev
	armed atomic.Bool
	slow  atomic.Bool
	delay time.Duration
}

func (d *waitFailDev) Readv(off int64, bufs [][]byte) error {
	if d.slow.Load() {
		time.Sleep(d.delay)
	}
	return d.Dev.Readv(off, bufs)
}

func (d *waitFailDev) NewQueue(depth int) (block.Queue, error) {
	// a GoQueue over d: its goroutines run d.Readv (slow)
	q, err := block.NewGoQueue(d, depth)
	if err != nil {
		return nil, err
	}
	return &waitFailQueue{GoQueue: q, d: d}, nil
}

type waitFailQueue struct {
	*block.GoQueue
	d *waitFailDev
}

func (q *waitFailQueue) Wait(out []*block.Req, min int) (int, error) {
	if q.d.armed.Swap(false) {
		return 0, errors.New("transient wait error")
	}
	return q.GoQueue.Wait(out, min)
}

// TestQueueFailReapsSlowRequests: after a Wait error (the fail path) the
// owner drains for drainLimit, then leaves the queue to finishQueue. A
// READ that is merely slow (4x drainLimit here; a 20 s stall under the
// default) completes later and is still reaped: its data-gate token comes
// back (discards no longer wait for it) and the queue is closed after
// it, before Shutdown returns: the image closes at once. (A drain that
// gave up left the queue open and discards waiting forever.)
func TestQueueFailReapsSlowRequests(t *testing.T) {
	defer func(d time.Duration) { drainLimit = d }(drainLimit)
	drainLimit = 250 * time.Millisecond
	d := &waitFailDev{Dev: memdev.New(memdev.Options{}), delay: time.Second}
	img := createImage(t, d, qcow2.CreateOptions{Size: testSize, ClusterSize: 65536})
	if err := block.WriteAt(img, pattern(1<<20, 4), 0); err != nil {
		t.Fatal(err)
	}
	var logs logSink
	srv := &Server{Exports: []*Export{{Dev: img, Unmap: true}}, Logf: logs.logf}
	s := serveNoCleanup(t, srv)
	c := dial(t, s)
	c.connect("", false)
	// warm the L2 cache so the READ takes the fast path (gate token)
	if code, _, _ := c.do(cmdRead, 0, 0, 4096, nil); code != 0 {
		t.Fatalf("read: %d", code)
	}
	d.slow.Store(true)
	d.armed.Store(true)
	c.request(cmdRead, 0, 7, 0, 4096, nil)
	_, rerr := c.tryReply(func(uint64) int { return 4096 })
	t.Logf("reply to the slow read: err %v", rerr)
	// Shutdown waits for the queue left draining (until its context
	// ends), so that the caller may close the image when it returns.
	mustReturn(t, "shutdown", func() error { return srv.Shutdown(t.Context()) })
	if !logs.has("still in flight") {
		t.Errorf("log: %q", logs.lines)
	}
	if err := img.Close(); err != nil { // at once: a queue still open refuses
		t.Errorf("close after Shutdown: %v", err)
	}
}

// panicWriteConn is a connection whose next Write panics while armed.
type panicWriteConn struct {
	net.Conn
	armed atomic.Bool
}

func (c *panicWriteConn) Write(b []byte) (int, error) {
	if c.armed.Swap(false) {
		panic("conn write boom")
	}
	return c.Conn.Write(b)
}

// TestQueueReplierPanic: a panic inside the replier's write, mid batch,
// before the budget went back, is logged; every request's budget returns
// exactly once, the connection ends, Shutdown returns, the image closes
// and no goroutine is left.
func TestQueueReplierPanic(t *testing.T) {
	base := runtime.NumGoroutine()
	d := memdev.New(memdev.Options{})
	img := createImage(t, d, qcow2.CreateOptions{Size: 8 << 20, ClusterSize: 65536})
	var logs logSink
	srv := &Server{Exports: []*Export{{Dev: img}}, Logf: logs.logf}
	l, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc := &panicWriteConn{Conn: a}
	if !srv.ServeConnAsync(pc) {
		t.Fatal("not served")
	}
	var cn *conn
	srv.mu.Lock()
	for k := range srv.conns {
		cn = k
	}
	srv.mu.Unlock()
	c := &client{t: t, nc: b, r: bufio.NewReader(b)}
	c.connect("", false)
	if code, _, _ := c.do(cmdWrite, 0, 0, 1<<20, pattern(1<<20, 3)); code != 0 {
		t.Fatalf("write %d", code)
	}
	pc.armed.Store(true)
	for i := range 8 {
		if c.tryRequest(cmdRead, 0, uint64(100+i), uint64(i)<<17, 128<<10, nil) != nil {
			break // the server closed the connection after the panic
		}
	}
	for {
		if _, err := c.tryReply(func(uint64) int { return 128 << 10 }); err != nil {
			break
		}
	}
	mustReturn(t, "shutdown", func() error { return srv.Shutdown(t.Context()) })
	if cn.budget.slots != srv.maxInFlight() || cn.budget.bytes != srv.maxInFlightBytes() {
		t.Errorf("budget after the end: %d slots, %d bytes; want %d, %d", cn.budget.slots, cn.budget.bytes, srv.maxInFlight(), srv.maxInFlightBytes())
	}
	if !logs.has("conn write boom") {
		t.Errorf("the panic was not logged: %q", logs.lines)
	}
	mustReturn(t, "close", img.Close)
	// The goroutines that ended may not have exited yet: poll (a fixed
	// 100 ms was too short on a loaded machine).
	g := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); g > base+1 && time.Now().Before(deadline); g = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if g > base+1 {
		t.Errorf("goroutines %d, were %d", g, base)
	}
}
