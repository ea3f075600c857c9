package nbd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// TestOnCloseServed: OnClose counts as served only the connections that
// reached the transmission phase: a bare connect and close (a port scan,
// nc -z) or an aborted negotiation is not a client.
func TestOnCloseServed(t *testing.T) {
	type event struct{ open, served int }
	events := make(chan event, 16)
	s := serveTest(t, &Server{Exports: []*Export{{Dev: newMem(memdev.Options{})}}, Logf: t.Logf,
		OnClose: func(open, served int) { events <- event{open, served} }})
	next := func(what string, want event) {
		t.Helper()
		select {
		case e := <-events:
			if e != want {
				t.Fatalf("%s: OnClose%+v, want %+v", what, e, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no OnClose", what)
		}
	}
	nc, err := net.Dial("unix", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	next("bare connect", event{0, 0})
	c := dial(t, s)
	c.greet()
	c.opt(optAbort, nil)
	c.nc.Close()
	next("aborted negotiation", event{0, 0})
	c = dial(t, s)
	c.connect("", false)
	probe := dial(t, s) // open while the client leaves
	var greeting [18]byte
	probe.read(greeting[:]) // the server has it among its connections
	c.request(cmdDisc, 0, 1, 0, 0, nil)
	next("client", event{1, 1})
	probe.nc.Close()
	next("probe after a client", event{0, 1})
}

// hugeDev is an 8 GiB device of zeros that keeps nothing.
type hugeDev struct{}

func (hugeDev) Readv(_ int64, bufs [][]byte) error {
	for _, b := range bufs {
		clear(b)
	}
	return nil
}
func (hugeDev) Writev(int64, [][]byte) error                { return nil }
func (hugeDev) WriteZeroes(int64, int64, block.Flags) error { return nil }
func (hugeDev) Flush() error                                { return nil }
func (hugeDev) Size() (int64, error)                        { return 8 << 30, nil }
func (hugeDev) Truncate(int64) error                        { return nil }
func (hugeDev) Caps() block.Caps                            { return block.Caps{Align: 1, MemAlign: 1} }
func (hugeDev) Close() error                                { return nil }

// gateStatus is fakeStatus whose Extent waits until open is closed,
// counting the callers that wait.
type gateStatus struct {
	fakeStatus
	open    chan struct{}
	waiting atomic.Int32
}

func (g *gateStatus) Extent(off, n int64) (Extent, error) {
	select {
	case <-g.open:
	default:
		g.waiting.Add(1)
		<-g.open
	}
	return g.fakeStatus.Extent(off, n)
}

// TestStatusBudget: BLOCK_STATUS replies count against the connection's
// in-flight budget like READ buffers: with the status source stalled, the
// server takes in as many status requests as the budget holds at their
// worst case (a fragmented range: maxDescriptors per context) and stops
// reading; nothing of the budget is left for another. Then every request
// gets its full reply.
func TestStatusBudget(t *testing.T) {
	g := &gateStatus{fakeStatus: fakeStatus{period: 1 << 16, data: 1 << 15}, open: make(chan struct{})}
	s := serveTest(t, &Server{Exports: []*Export{{Dev: hugeDev{}, Status: g, AllocationDepth: true}}, Logf: t.Logf, MaxInFlightBytes: MaxPayload})
	var once sync.Once
	release := func() { once.Do(func() { close(g.open) }) }
	t.Cleanup(release) // before the server's shutdown, if the test fails
	c := dial(t, s)
	c.connect("", true, "base:allocation", "qemu:allocation-depth")
	const n = 24
	for i := range n {
		c.request(cmdBlockStatus, 0, uint64(i), 0, 1<<32-1, nil)
	}

	cost := (&conn{meta: []uint32{metaBaseAllocation, metaAllocDepth}}).statusCost(&request{len: 1<<32 - 1})
	if cost < 2*2*8*maxDescriptors {
		t.Fatalf("cost %d: less than the descriptors", cost)
	}
	fit := int(MaxPayload / cost)
	if fit >= n || fit > s.maxInFlight() {
		t.Fatalf("%d requests of %d bytes fit: the test needs fewer", fit, cost)
	}
	for deadline := time.Now().Add(10 * time.Second); int(g.waiting.Load()) < fit; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d status requests running, want %d", g.waiting.Load(), fit)
		}
	}
	// Every request that started holds its cost until its reply is
	// sent, and they all wait on the gate: what is left of the budget
	// cannot change, and must not admit another.
	s.mu.Lock()
	var bud *budget
	for sc := range s.conns {
		bud = sc.budget
	}
	s.mu.Unlock()
	bud.mu.Lock()
	left, slots := bud.bytes, bud.slots
	bud.mu.Unlock()
	if left != MaxPayload-int64(fit)*cost || left >= cost || slots != s.maxInFlight()-fit {
		t.Fatalf("budget left: %d bytes, %d slots; want %d bytes (< %d), %d slots",
			left, slots, MaxPayload-int64(fit)*cost, cost, s.maxInFlight()-fit)
	}
	if w := int(g.waiting.Load()); w != fit {
		t.Fatalf("%d status requests running, want %d", w, fit)
	}
	release()
	seen := map[uint64]int{}
	for range 2 * n {
		ch := c.readReply(0)
		if ch.err != 0 || ch.typ != replyBlockStatus || (len(ch.data)-4)/8 != maxDescriptors {
			t.Fatalf("reply %d: type %d, error %d, %d descriptors", ch.cookie, ch.typ, ch.err, (len(ch.data)-4)/8)
		}
		// base:allocation: 32 KiB data, 32 KiB hole; the depth: 1, 0.
		want := [2]uint32{0, StateHole | StateZero}
		if binary.BigEndian.Uint32(ch.data) == metaAllocDepth {
			want = [2]uint32{1, 0}
		}
		for i, d := 0, ch.data[4:]; i < 4; i, d = i+1, d[8:] {
			if binary.BigEndian.Uint32(d) != 1<<15 || binary.BigEndian.Uint32(d[4:]) != want[i%2] {
				t.Fatalf("reply %d: descriptor %d: % x", ch.cookie, i, d[:8])
			}
		}
		seen[ch.cookie]++
	}
	if len(seen) != n {
		t.Fatalf("replies for %d requests, want %d", len(seen), n)
	}
	// A worker gives its share back just after sending its reply.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		bud.mu.Lock()
		left := bud.bytes
		bud.mu.Unlock()
		if left == MaxPayload {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget after the replies: %d", left)
		}
	}
}

// recConn records what is read from the socket.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	got []byte
}

func (r *recConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.got = append(r.got, p[:n]...)
	r.mu.Unlock()
	return n, err
}

func (r *recConn) received() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// TestTLSDisconnect: after NBD_CMD_DISC (and after NBD_OPT_ABORT) over
// TLS the server ends the TLS session with a close_notify alert before
// closing the socket (section "TLS support"), in TLS 1.2 and 1.3.
func TestTLSDisconnect(t *testing.T) {
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	s := serveTest(t, &Server{Exports: []*Export{{Dev: newMem(memdev.Options{})}}, TLS: cfg, Logf: t.Logf})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, end := range []string{"DISC", "ABORT"} {
			c := dial(t, s)
			c.greet()
			if rs := c.opt(optStartTLS, nil); rs[0].typ != repAck {
				t.Fatalf("STARTTLS: 0x%x", rs[0].typ)
			}
			rec := &recConn{Conn: c.nc}
			tc := tls.Client(rec, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			c.nc, c.r = tc, bufio.NewReader(tc)
			if end == "DISC" {
				c.opt(optStructuredReply, nil)
				if rs := c.opt(optGo, infoData("")); rs[len(rs)-1].typ != repAck {
					t.Fatalf("GO over TLS: %+v", rs)
				}
				if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
					t.Fatalf("FLUSH over TLS: %d", code)
				}
			} else {
				c.opt(optList, nil)
			}
			mark := rec.received() // every reply so far is read
			records := 1           // what comes after: the alert
			if end == "DISC" {
				c.request(cmdDisc, 0, 2, 0, 0, nil)
			} else {
				c.sendOpt(optAbort, nil)
				c.readOptReply()
				records = 2 // the ACK, then the alert
			}
			if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("TLS %x, %s: read after the end: %v", v, end, err)
			}
			rec.mu.Lock()
			var types []byte
			for b := rec.got[mark:]; len(b) > 0; {
				if len(b) < 5 || len(b) < 5+int(binary.BigEndian.Uint16(b[3:])) {
					t.Fatalf("TLS %x, %s: a truncated record: % x", v, end, b)
				}
				types = append(types, b[0])
				b = b[5+int(binary.BigEndian.Uint16(b[3:])):]
			}
			rec.mu.Unlock()
			// The alert record: in TLS 1.3 every encrypted record says
			// application data, but nothing else follows DISC's or
			// ABORT's last reply.
			want := byte(21) // alert
			if v == tls.VersionTLS13 {
				want = 23
			}
			if len(types) != records || types[len(types)-1] != want {
				t.Errorf("TLS %x, %s: records %v after the last request; want %d, the last of type %d (close_notify)", v, end, types, records, want)
			}
		}
	}
}
