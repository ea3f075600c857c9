package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
)

// idleConn opens a connection that reads the greeting, sends the client
// flags and then negotiates nothing, as a flood of idle clients would.
// It uses no buffered reader, so that the test's side of it costs little
// next to the server's.
func idleConn(t testing.TB, s *testServer) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	var g [18]byte
	if _, err := io.ReadFull(nc, g[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if _, err := nc.Write(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)); err != nil {
		t.Fatal(err)
	}
	return nc
}

// heapAndStacks is the memory the process holds in live heap objects
// and goroutine stacks, after a collection.
func heapAndStacks() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}

// TestIdleConnsCost: a connection that has not negotiated holds small
// buffers only (its 64 KiB reader and writer and its budget come with the
// transmission phase), so a flood of idle connections costs the server
// little: 128 KiB each before, a few KiB now (the bound below counts both
// ends of each connection, the goroutine and its stack).
func TestIdleConnsCost(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 100
	}
	s := serveTest(t, &Server{Exports: []*Export{{Dev: newMem(memdev.Options{})}}, Logf: t.Logf, MaxHandshakes: 2 * n})
	// One connection first, so that what every connection shares (the
	// listener's and the runtime's first allocations) is not counted.
	idleConn(t, s)
	before := heapAndStacks()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = idleConn(t, s)
	}
	// The server has read every client's flags once it answers an
	// option: send the first one on the last connection and wait.
	last := &client{t: t, nc: conns[n-1]}
	last.r = bufio.NewReader(conns[n-1])
	if rs := last.opt(optList, nil); rs[len(rs)-1].typ != repAck {
		t.Fatalf("LIST: %+v", rs)
	}
	per := (heapAndStacks() - before) / int64(n)
	t.Logf("%d idle connections: %d bytes each", n, per)
	const bound = 24 << 10
	if per > bound {
		t.Fatalf("an idle connection costs %d bytes, more than %d", per, bound)
	}
}

// TestHandshakeBound: at most MaxHandshakes connections negotiate at
// once; the one negotiating longest makes way for a new one (logged), so
// idle connections cannot lock clients out, and a client that negotiates
// gets in while they sit there.
func TestHandshakeBound(t *testing.T) {
	var log logSink
	const limit = 4
	s := serveTest(t, &Server{Exports: []*Export{{Dev: newMem(memdev.Options{})}}, Logf: log.logf, MaxHandshakes: limit, HandshakeLimit: -1})
	idle := make([]net.Conn, limit+3)
	for i := range idle {
		idle[i] = idleConn(t, s)
	}
	for i, nc := range idle {
		if want := i >= 3; open(nc, want) != want {
			t.Errorf("idle connection %d open: %v, want %v", i, !want, want)
		}
	}
	if n := negotiatingCount(s.Server); n > limit {
		t.Errorf("%d connections negotiating, limit %d", n, limit)
	}
	c := dial(t, s)
	c.connect("", false)
	if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
		t.Fatalf("flush: %d", code)
	}
	// The client made way for itself: the oldest idle one went.
	if open(idle[3], false) {
		t.Error("the oldest idle connection is still open")
	}
	if n := negotiatingCount(s.Server); n != limit-1 {
		t.Errorf("%d connections negotiating, want %d", n, limit-1)
	}
	if !log.has("negotiating") {
		t.Error("no log line for the closed connections")
	}
}

// open reports whether the server left nc open: a read that finds
// nothing to read for a while rather than the end of the stream. That
// while is 5 s when the connection should be closed (the server's close
// may take time), 50 ms when it should be open (a close found then is
// real; one the server makes later is not this test's business).
func open(nc net.Conn, wantOpen bool) bool {
	wait := 5 * time.Second
	if wantOpen {
		wait = 50 * time.Millisecond
	}
	nc.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	for {
		_, err := nc.Read(b[:])
		if err == nil {
			continue // the rest of a reply
		}
		return errors.Is(err, os.ErrDeadlineExceeded)
	}
}

// negotiatingCount is how many connections s counts as negotiating.
func negotiatingCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.negotiating.Len()
}

// sizePanicDev panics when asked its size, in the negotiation.
type sizePanicDev struct{ *memdev.Dev }

func (sizePanicDev) Size() (int64, error) { panic("size boom") }

// TestNegotiationPanicLeavesBound: a connection whose negotiation
// panicked (recovered and logged by serve) no longer counts among those
// negotiating, so panics cannot use up MaxHandshakes.
func TestNegotiationPanicLeavesBound(t *testing.T) {
	var log logSink
	s := serveTest(t, &Server{Exports: []*Export{{Dev: sizePanicDev{newMem(memdev.Options{})}}}, Logf: log.logf})
	for range 3 {
		c := dial(t, s)
		c.greet()
		c.sendOpt(optGo, infoData(""))
		if !c.closed() {
			t.Fatal("connection open after a panic in the negotiation")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); negotiatingCount(s.Server) != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted as negotiating", negotiatingCount(s.Server))
		}
	}
	if !log.has("size boom") {
		t.Error("the panic was not logged")
	}
}

// TestIdleTransmissionCost: a connection in the transmission phase that
// sends nothing starts no workers (each of its 64 cost a goroutine), and
// a burst of requests starts them as needed.
func TestIdleTransmissionCost(t *testing.T) {
	s := newTestServer(t, &Export{Dev: newMem(memdev.Options{})})
	c0 := dial(t, s)
	c0.connect("", false)
	base := runtime.NumGoroutine()
	const n = 20
	for range n {
		c := dial(t, s)
		c.connect("", false)
	}
	// The count settles once the server is done with the negotiations:
	// poll it (a fixed sleep was too short on a loaded machine). Workers
	// started for an idle connection would not go away.
	var per float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		per = float64(runtime.NumGoroutine()-base) / n
		if per <= 4 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%.1f goroutines per idle connection", per)
	if per > 4 {
		t.Errorf("an idle connection in transmission holds %.1f goroutines", per)
	}
}
