package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2"
)

const testSize = 1 << 20

func newMem(o memdev.Options) *memdev.Dev { return memdev.FromBytes(make([]byte, testSize), o) }

func newTestServer(t testing.TB, exps ...*Export) *testServer {
	return serveTest(t, &Server{Exports: exps, Logf: t.Logf})
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestNegotiation(t *testing.T) {
	s := newTestServer(t, &Export{Name: "disk", Description: "a test disk", Dev: newMem(memdev.Options{}), AllocationDepth: true})
	c := dial(t, s)
	c.greet()
	expect := func(rs []optReply, typ uint32) {
		t.Helper()
		if last := rs[len(rs)-1]; last.typ != typ {
			t.Fatalf("reply 0x%x (%s), want 0x%x", last.typ, last.data, typ)
		}
	}
	rs := c.opt(optList, nil)
	// The name's length, the name, then the description (qemu-nbd -D).
	if len(rs) != 2 || rs[0].typ != repServer || string(rs[0].data[4:]) != "diska test disk" || binary.BigEndian.Uint32(rs[0].data) != 4 {
		t.Fatalf("LIST: %+v", rs)
	}
	expect(c.opt(optList, []byte{1}), repErrInvalid)
	expect(c.opt(optInfo, infoData("nope")), repErrUnknown)
	expect(c.opt(optInfo, append(infoData("disk"), 0)), repErrInvalid)
	expect(c.opt(optInfo, []byte{0, 0, 1}), repErrInvalid)
	expect(c.opt(99, []byte("whatever")), repErrUnsup)
	expect(c.opt(optPeekExport, nil), repErrUnsup)
	// Data past the info requests (qemu-nbd: "unexpected length"), in
	// an option longer than the 64 KiB that used to be TOO_BIG.
	expect(c.opt(optGo, make([]byte, 64<<10+1)), repErrInvalid)
	expect(c.opt(optSetMetaContext, metaData("disk", "base:allocation")), repErrInvalid)
	// LIST needs no structured replies (the spec's MAY refuse; qemu-nbd
	// answers).
	if rs := c.opt(optListMetaContext, metaData("disk")); len(rs) != 3 || rs[2].typ != repAck {
		t.Fatalf("LIST_META_CONTEXT before STRUCTURED_REPLY: %+v", rs)
	}
	expect(c.opt(optStartTLS, nil), repErrPolicy)
	expect(c.opt(optStructuredReply, nil), repAck)
	expect(c.opt(optStructuredReply, nil), repErrInvalid)
	expect(c.opt(optStructuredReply, []byte{0}), repErrInvalid)
	for _, tc := range []struct {
		qs   []string
		want int
	}{{nil, 2}, {[]string{"qemu:"}, 1}, {[]string{"base:"}, 1}, {[]string{"base:allocation", "base:allocation"}, 1}, {[]string{"x:y"}, 0}} {
		rs := c.opt(optListMetaContext, metaData("disk", tc.qs...))
		if len(rs) != tc.want+1 || rs[len(rs)-1].typ != repAck {
			t.Fatalf("LIST_META_CONTEXT %q: %+v", tc.qs, rs)
		}
	}
	expect(c.opt(optListMetaContext, metaData("nope")), repErrUnknown)
	expect(c.opt(optSetMetaContext, metaData("disk", "base:allocation")[:10]), repErrInvalid)
	expect(c.opt(optSetMetaContext, append(metaData("disk"), 0, 0, 0, 1)), repErrInvalid)
	bad := metaData("disk")
	binary.BigEndian.PutUint32(bad[8:], 1<<30) // a billion queries in 0 bytes
	expect(c.opt(optSetMetaContext, bad), repErrInvalid)
	rs = c.opt(optInfo, infoData("disk", infoName, infoDescription, infoBlockSize))
	var got []string
	for _, r := range rs[:len(rs)-1] {
		got = append(got, fmt.Sprint(binary.BigEndian.Uint16(r.data)))
		if binary.BigEndian.Uint16(r.data) == infoDescription && string(r.data[2:]) != "a test disk" {
			t.Errorf("description %q", r.data[2:])
		}
	}
	// qemu-nbd's order: name, description, block sizes, export.
	if strings.Join(got, ",") != "1,2,3,0" {
		t.Fatalf("INFO replies %v", got)
	}
	// A selection for "disk" survives GO to "disk".
	if rs := c.opt(optSetMetaContext, metaData("disk", "qemu:allocation-depth", "nope:x")); len(rs) != 2 {
		t.Fatalf("SET_META_CONTEXT: %+v", rs)
	}
	c.opt(optGo, infoData("disk"))
	if code, _, chunks := c.do(cmdBlockStatus, 0, 0, 4096, nil); code != 0 || len(chunks) != 1 {
		t.Fatalf("BLOCK_STATUS: %d %+v", code, chunks)
	}

	// EXPORT_NAME: size and flags, no zeroes (the client asked).
	c = dial(t, s)
	c.greet()
	c.sendOpt(optExportName, []byte("disk"))
	var b [10]byte
	c.read(b[:])
	if binary.BigEndian.Uint64(b[:]) != testSize || binary.BigEndian.Uint16(b[8:])&FlagSendWriteZeroes == 0 {
		t.Fatalf("EXPORT_NAME reply % x", b)
	}
	if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
		t.Fatalf("FLUSH: %d", code)
	}

	// A client without fixed newstyle (flags 0) that sends
	// EXPORT_NAME is served, as qemu-nbd serves it: the size, flags and
	// 124 zero bytes.
	c = dial(t, s)
	var g [18]byte
	c.read(g[:])
	c.write([]byte{0, 0, 0, 0})
	c.sendOpt(optExportName, []byte("disk"))
	var pb [134]byte
	c.read(pb[:])
	if binary.BigEndian.Uint64(pb[:]) != testSize || !bytes.Equal(pb[10:], make([]byte, 124)) {
		t.Fatalf("plain newstyle EXPORT_NAME reply % x", pb[:10])
	}
	if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
		t.Fatalf("plain newstyle FLUSH: %d", code)
	}

	// EXPORT_NAME of an unknown export, ABORT, bad magic, another
	// option than EXPORT_NAME without fixed newstyle: the connection
	// closes.
	for name, f := range map[string]func(c *client){
		"unknown export": func(c *client) { c.greet(); c.sendOpt(optExportName, []byte("x")) },
		"abort": func(c *client) {
			c.greet()
			if rs := c.opt(optAbort, nil); rs[0].typ != repAck {
				t.Errorf("ABORT: %+v", rs)
			}
		},
		"bad magic": func(c *client) { c.greet(); c.write(make([]byte, 16)) },
		"plain newstyle, another option": func(c *client) {
			var g [18]byte
			c.read(g[:])
			c.write([]byte{0, 0, 0, 0})
			c.sendOpt(optList, nil)
		},
		"unknown flags": func(c *client) { var g [18]byte; c.read(g[:]); c.write([]byte{0, 0, 0, 9}) },
		"huge option": func(c *client) {
			c.greet()
			b := binary.BigEndian.AppendUint64(nil, magicOpts)
			c.write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, optGo), 1<<30))
		},
	} {
		c := dial(t, s)
		f(c)
		if !c.closed() {
			t.Errorf("%s: connection still open", name)
		}
	}
}

func TestRequests(t *testing.T) {
	mem := newMem(memdev.Options{})
	ro := newMem(memdev.Options{})
	slow := newMem(memdev.Options{NoAllocate: true})
	s := newTestServer(t, &Export{Name: "", Dev: mem, Unmap: true, MultiConn: true},
		&Export{Name: "ro", Dev: ro, ReadOnly: true}, &Export{Name: "slow", Dev: slow})
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprint("structured=", structured), func(t *testing.T) {
			c := dial(t, s)
			size, flags := c.connect("", structured)
			if size != testSize {
				t.Fatalf("size %d", size)
			}
			want := uint16(FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero | FlagCanMultiConn | FlagSendCache)
			if structured {
				want |= FlagSendDF
			}
			if flags != want {
				t.Fatalf("flags 0x%x, want 0x%x", flags, want)
			}
			p := pattern(100_000, 3)
			for _, tc := range []struct {
				name       string
				typ, flags uint16
				off        uint64
				n          uint32
				payload    []byte
				code       uint32
			}{
				{"write", cmdWrite, 0, 1000, uint32(len(p)), p, 0},
				{"write fua", cmdWrite, cmdFlagFUA, 200_000, 10, p[:10], 0},
				{"read past end", cmdRead, 0, testSize - 10, 11, nil, errInval},
				{"read at end", cmdRead, 0, testSize, 0, nil, 0},
				{"read far", cmdRead, 0, 1 << 62, 1, nil, errInval},
				{"write past end", cmdWrite, 0, testSize - 1, 2, []byte{1, 2}, errNoSpc},
				{"zeroes past end", cmdWriteZeroes, 0, testSize, 1, nil, errNoSpc},
				{"trim past end", cmdTrim, 0, testSize, 1, nil, errInval},
				{"unknown command", 42, 0, 0, 0, nil, errInval},
				{"resize", 8, 0, 0, 0, nil, errInval},
				{"bad flags", cmdRead, cmdFlagReqOne, 0, 1, nil, errInval},
				{"unknown flag", cmdWrite, 1 << 9, 0, 1, []byte{1}, errInval},
				{"oversized read", cmdRead, 0, 0, MaxPayload + 1, nil, errInval},
				// Reserved fields, ignored as qemu-nbd 7.2 does
				// within the export; past its end EINVAL, as
				// qemu-nbd's range check (TestRequestsLikeQemuNbd).
				{"flush with range", cmdFlush, 0, 0, 1, nil, 0},
				{"flush with offset", cmdFlush, 0, 1 << 40, 0, nil, errInval},
				{"flush past the end", cmdFlush, 0, testSize - 1, 2, nil, errInval},
				{"flush with both", cmdFlush, 0, 4096, 4096, nil, 0},
				{"flush", cmdFlush, 0, 0, 0, nil, 0},
				{"cache", cmdCache, 0, 0, 4096, nil, 0},
				{"status without contexts", cmdBlockStatus, 0, 0, 4096, nil, errInval},
				{"zeroes", cmdWriteZeroes, 0, 2000, 3000, nil, 0},
				{"zeroes no hole", cmdWriteZeroes, cmdFlagNoHole | cmdFlagFUA, 6000, 100, nil, 0},
				{"fast zero", cmdWriteZeroes, cmdFlagFastZero, 8192, 8192, nil, 0},
				{"trim", cmdTrim, 0, 20_000, 1000, nil, 0},
			} {
				if structured && tc.name == "bad flags" {
					continue
				}
				code, _, _ := c.do(tc.typ, tc.flags, tc.off, tc.n, tc.payload)
				if code != tc.code {
					t.Errorf("%s: error %d, want %d", tc.name, code, tc.code)
				}
			}
			if !structured {
				if code, _, _ := c.do(cmdRead, cmdFlagDF, 0, 1, nil); code != errInval {
					t.Errorf("DF without structured replies: %d", code)
				}
			}
			code, got, _ := c.do(cmdRead, 0, 1000, uint32(len(p)), nil)
			want2 := bytes.Clone(p)
			clear(want2[1000:4000])
			clear(want2[5000:5100])
			clear(want2[7192:15384])
			clear(want2[19000:20000])
			if code != 0 || !bytes.Equal(got, want2) {
				t.Fatalf("read back: code %d, equal %v", code, bytes.Equal(got, want2))
			}
		})
	}

	c := dial(t, s)
	if _, flags := c.connect("ro", true); flags&FlagReadOnly == 0 || flags&FlagSendTrim != 0 {
		t.Fatalf("read-only flags 0x%x", flags)
	}
	for _, typ := range []uint16{cmdWrite, cmdWriteZeroes, cmdTrim} {
		var pl []byte
		if typ == cmdWrite {
			pl = []byte{1}
		}
		if code, _, _ := c.do(typ, 0, 0, 1, pl); code != errPerm {
			t.Errorf("%s on read-only: %d", cmdName(typ), code)
		}
	}
	c = dial(t, s)
	c.connect("slow", false)
	// A refused FAST_ZERO leaves the data alone: no fallback that
	// writes zeros.
	pat := bytes.Repeat([]byte{0x5a}, 65536)
	if code, _, _ := c.do(cmdWrite, 0, 0, 65536, pat); code != 0 {
		t.Fatalf("WRITE on the slow export: %d", code)
	}
	if code, _, _ := c.do(cmdWriteZeroes, cmdFlagFastZero, 0, 65536, nil); code != errNotSup {
		t.Errorf("FAST_ZERO on a device without Allocate: %d", code)
	}
	if code, got, _ := c.do(cmdRead, 0, 0, 65536, nil); code != 0 || !bytes.Equal(got, pat) {
		t.Errorf("after a refused FAST_ZERO: read %d, data changed: %v", code, !bytes.Equal(got, pat))
	}
	if code, _, _ := c.do(cmdWriteZeroes, 0, 0, 65536, nil); code != 0 {
		t.Errorf("WRITE_ZEROES on a device without Allocate: %d", code)
	}
	if code, _, _ := c.do(cmdTrim, 0, 0, 65536, nil); code != 0 {
		t.Errorf("TRIM ignored: %d", code)
	}
}

// TestBrokenStream: garbage, an oversized write, a client gone in the
// middle of a payload: the connection closes, the server and the device
// are fine, and nothing of the half-sent request reaches the device.
func TestBrokenStream(t *testing.T) {
	mem := newMem(memdev.Options{})
	s := newTestServer(t, &Export{Dev: mem})
	for name, f := range map[string]func(c *client){
		"garbage": func(c *client) { c.write(bytes.Repeat([]byte{0xa5}, 28)) },
		"oversized write": func(c *client) {
			c.request(cmdWrite, 0, 1, 0, MaxPayload+1, nil)
			if ch := c.readReply(0); ch.err != errInval {
				t.Errorf("oversized write: error %d", ch.err)
			}
		},
		"half a payload": func(c *client) {
			c.request(cmdWrite, 0, 1, 4096, 65536, bytes.Repeat([]byte{1}, 1000))
			c.nc.Close()
		},
		"half a header": func(c *client) {
			c.write([]byte{0x25, 0x60, 0x95, 0x13, 0, 0})
			c.nc.Close()
		},
	} {
		c := dial(t, s)
		c.connect("", false)
		f(c)
		if !c.closed() {
			t.Errorf("%s: connection still open", name)
		}
	}
	c := dial(t, s)
	c.connect("", true)
	code, got, _ := c.do(cmdRead, 0, 0, 1<<17, nil)
	if code != 0 || !bytes.Equal(got, make([]byte, 1<<17)) {
		t.Fatalf("device changed by broken requests (code %d)", code)
	}
}

// TestConcurrent: requests of one connection run concurrently and reply
// out of order; many pipelined requests all get their reply.
func TestConcurrent(t *testing.T) {
	hold := make(chan struct{})
	var once sync.Once
	mem := newMem(memdev.Options{OnWrite: func(off, n int64) {
		if off == 0 {
			once.Do(func() {
				select {
				case <-hold:
				case <-time.After(10 * time.Second):
				}
			})
		}
	}})
	s := newTestServer(t, &Export{Dev: mem, MultiConn: true})
	c := dial(t, s)
	c.connect("", true)
	c.request(cmdWrite, 0, 1, 0, 4, []byte{1, 2, 3, 4})
	c.request(cmdWrite, 0, 2, 65536, 4, []byte{5, 6, 7, 8})
	if ch := c.readReply(0); ch.cookie != 2 || ch.err != 0 {
		t.Fatalf("first reply %+v, want cookie 2", ch)
	}
	close(hold)
	if ch := c.readReply(0); ch.cookie != 1 || ch.err != 0 {
		t.Fatalf("second reply %+v, want cookie 1", ch)
	}

	// Pipelined: 4 connections, each 300 requests in flight at once
	// (more than the in-flight budget), reads of what each wrote.
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Go(func() {
			c := dial(t, s)
			c.connect("", k%2 == 0)
			const n = 300
			base := uint64(k)*testSize/4 + 128<<10
			go func() {
				for i := range n {
					off := base + uint64(i%30)*4096
					c.request(cmdWrite, 0, uint64(2*i), off, 4096, bytes.Repeat([]byte{byte(k)}, 4096))
					c.request(cmdRead, 0, uint64(2*i+1), off, 4096, nil)
				}
				c.request(cmdFlush, 0, 1<<40, 0, 0, nil)
			}()
			seen := map[uint64]bool{}
			for len(seen) < 2*n+1 {
				ch, err := c.tryReply(func(cookie uint64) int {
					if cookie%2 == 1 && cookie != 1<<40 {
						return 4096
					}
					return 0
				})
				if err != nil {
					t.Error(err)
					return
				}
				if ch.cookie%2 == 1 && ch.cookie != 1<<40 && ch.err == 0 && len(ch.data) > 0 {
					d := ch.data
					if !ch.simple {
						d = d[8:]
					}
					if d[0] != byte(k) && d[0] != 0 {
						t.Errorf("conn %d read %d", k, d[0])
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
}

// fakeStatus describes a device as runs of extents repeating every
// period bytes: [0, data) data, [data, period) a hole at depth 0.
type fakeStatus struct {
	period, data int64
	fail         bool
}

func (f fakeStatus) Extent(off, n int64) (Extent, error) {
	if f.fail {
		return Extent{}, errors.New("status failed")
	}
	in := off % f.period
	if in < f.data {
		return Extent{Len: min(n, f.data-in), Depth: 1}, nil
	}
	return Extent{Len: min(n, f.period-in), Hole: true, Zero: true}, nil
}

func TestStructured(t *testing.T) {
	mem := newMem(memdev.Options{})
	// The device's bytes are non-zero everywhere: the hole chunks must
	// come from the status, not the data.
	block.WriteAt(mem, bytes.Repeat([]byte{9}, testSize), 0)
	st := fakeStatus{period: 65536, data: 16384}
	s := newTestServer(t, &Export{Dev: mem, Status: st, AllocationDepth: true}, &Export{Name: "bad", Dev: mem, Status: fakeStatus{fail: true}, AllocationDepth: true})
	c := dial(t, s)
	c.connect("", true, "base:allocation", "qemu:allocation-depth")
	code, data, chunks := c.do(cmdRead, 0, 8192, 3*65536, nil)
	if code != 0 {
		t.Fatalf("read: %d", code)
	}
	var kinds []string
	for _, ch := range chunks {
		kinds = append(kinds, fmt.Sprint(ch.typ))
	}
	// data [8K,16K) hole [16K,64K) data [64K,80K) hole ... data [192K, 200K)
	if strings.Join(kinds, ",") != "1,2,1,2,1,2,1" {
		t.Fatalf("chunk types %v", kinds)
	}
	for i := range data {
		off := int64(8192 + i)
		want := byte(9)
		if off%65536 >= 16384 {
			want = 0
		}
		if data[i] != want {
			t.Fatalf("byte %d: %d, want %d", off, data[i], want)
		}
	}
	if _, _, chunks := c.do(cmdRead, cmdFlagDF, 0, 65536, nil); len(chunks) != 1 || chunks[0].typ != replyOffsetData {
		t.Fatalf("DF read: %d chunks", len(chunks))
	}
	code, _, chunks = c.do(cmdBlockStatus, 0, 0, 2*65536, nil)
	if code != 0 || len(chunks) != 2 {
		t.Fatalf("block status: %d, %d chunks", code, len(chunks))
	}
	descs := func(ch chunk) string {
		var s []string
		for b := ch.data[4:]; len(b) >= 8; b = b[8:] {
			s = append(s, fmt.Sprintf("%d:%d", binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])))
		}
		return fmt.Sprintf("%d=%s", binary.BigEndian.Uint32(ch.data), strings.Join(s, ","))
	}
	if got := descs(chunks[0]) + " " + descs(chunks[1]); got != "0=16384:0,49152:3,16384:0,49152:3 1=16384:1,49152:0,16384:1,49152:0" {
		t.Fatalf("block status %s", got)
	}
	if chunks[0].flags&replyFlagDone != 0 || chunks[1].flags&replyFlagDone == 0 {
		t.Fatalf("DONE flags %d %d", chunks[0].flags, chunks[1].flags)
	}
	_, _, chunks = c.do(cmdBlockStatus, cmdFlagReqOne, 20000, 65536, nil)
	if got := descs(chunks[0]) + " " + descs(chunks[1]); got != "0=45536:3 1=45536:0" {
		t.Fatalf("block status REQ_ONE %s", got)
	}
	if code, _, _ := c.do(cmdBlockStatus, 0, testSize-1, 2, nil); code != errInval {
		t.Fatalf("block status past the end: %d", code)
	}
	if code, _, chunks := c.do(cmdRead, 0, 0, 0, nil); code != 0 || chunks[0].typ != replyNone {
		t.Fatalf("empty read: %d %+v", code, chunks)
	}
	c = dial(t, s)
	c.connect("bad", true, "base:allocation")
	if code, _, chunks := c.do(cmdRead, 0, 0, 4096, nil); code != errIO || chunks[0].typ != replyError {
		t.Fatalf("read with failing status: %d %+v", code, chunks)
	}
	if code, _, _ := c.do(cmdBlockStatus, 0, 0, 4096, nil); code != errIO {
		t.Fatalf("block status failing: %d", code)
	}
}

// panicDev panics on reads.
type panicDev struct{ *memdev.Dev }

func (panicDev) Readv(int64, [][]byte) error { panic("boom") }

func TestPanicIsEIO(t *testing.T) {
	s := serveTest(t, &Server{Exports: []*Export{{Dev: panicDev{newMem(memdev.Options{})}}}})
	c := dial(t, s)
	c.connect("", false)
	if code, _, _ := c.do(cmdRead, 0, 0, 1, nil); code != errIO {
		t.Fatalf("panicking read: %d", code)
	}
	if code, _, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 {
		t.Fatalf("flush after panic: %d", code)
	}
}

// writeGate holds the writes that reach a memdev's OnWrite until hold
// is closed; reached is closed when the first one arrives, so a test
// knows the server has read its WRITE and runs it.
type writeGate struct {
	reached, hold chan struct{}
	once          sync.Once
}

func newWriteGate() *writeGate {
	return &writeGate{reached: make(chan struct{}), hold: make(chan struct{})}
}

func (g *writeGate) onWrite(off, n int64) {
	g.once.Do(func() { close(g.reached) })
	<-g.hold
}

// wait returns once a write has reached the device (a hang guard only).
func (g *writeGate) wait(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(ioGuard):
		t.Fatal("the WRITE has not reached the device")
	}
}

// TestShutdown: Shutdown lets the request in flight finish and reply,
// then closes the connection and returns.
func TestShutdown(t *testing.T) {
	g := newWriteGate()
	mem := newMem(memdev.Options{OnWrite: g.onWrite})
	srv := &Server{Exports: []*Export{{Dev: mem}}, Logf: t.Logf}
	s := serveTest(t, srv)
	c := dial(t, s)
	c.connect("", false)
	c.request(cmdWrite, 0, 5, 0, 3, []byte{1, 2, 3})
	g.wait(t) // the WRITE is in flight
	done := make(chan error)
	go func() { done <- srv.Shutdown(t.Context()) }()
	select {
	case <-done:
		t.Fatal("Shutdown returned with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.hold)
	if ch := c.readReply(0); ch.cookie != 5 || ch.err != 0 {
		t.Fatalf("reply %+v", ch)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !c.closed() {
		t.Fatal("connection open after Shutdown")
	}
	if !bytes.Equal(mem.Bytes()[:3], []byte{1, 2, 3}) {
		t.Fatal("write lost")
	}
}

// TestShutdownClientNotReading: a client that sends READs and never
// reads the replies holds Shutdown for stopGrace, not for the caller's
// whole context (qnbd's 30 s after SIGTERM), on the workers and on a
// qcow2 image's queued path; the device requests have all completed. A
// request that outlasts stopGrace still gets its reply.
//
// The caller's context here is a hang guard: Shutdown waiting for it
// (the bug) fails the test, with its error, after two minutes, while
// Shutdown itself may take seconds on a loaded machine, where finishing
// the device reads is slow (15 s in CI with 400 reads of 1 MiB and a
// 10 s context).
func TestShutdownClientNotReading(t *testing.T) {
	defer func(g time.Duration) { stopGrace = g }(stopGrace)
	stopGrace = 200 * time.Millisecond
	_, img := revImage(t)
	srv := &Server{Exports: []*Export{{Dev: newMem(memdev.Options{})}, {Name: "q", Dev: img}}, Logf: t.Logf}
	s := serveNoCleanup(t, srv)
	// More requests than the budget's slots (64 by default): the budget
	// fills, the reader waits for a slot and the reply writes block on
	// the sockets, which the 1 MiB replies fill.
	const perConn = 80
	for _, name := range []string{"", "q"} {
		c := dial(t, s)
		c.connect(name, false)
		for i := range uint64(perConn) {
			c.request(cmdRead, 0, i, 0, 1<<20, nil)
		}
	}
	waitBudgetsFull(t, srv, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after %v: %v", time.Since(start), err)
	}
	t.Logf("Shutdown took %v", time.Since(start))

	// The grace bounds a blocked write, not the time since Shutdown: a
	// request that outlasts it still gets its reply to a client that
	// reads.
	g := newWriteGate()
	mem := newMem(memdev.Options{OnWrite: g.onWrite})
	srv = &Server{Exports: []*Export{{Dev: mem}}, Logf: t.Logf}
	s = serveNoCleanup(t, srv)
	c := dial(t, s)
	c.connect("", false)
	c.request(cmdWrite, 0, 5, 0, 3, []byte{1, 2, 3})
	g.wait(t) // the WRITE is in flight
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(t.Context()) }()
	time.Sleep(3 * stopGrace)
	close(g.hold)
	if ch := c.readReply(0); ch.cookie != 5 || ch.err != 0 {
		t.Fatalf("reply %+v", ch)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// waitBudgetsFull waits (ioGuard at most) until srv serves n connections
// in the transmission phase and each has every slot of its budget taken:
// as many requests in flight as it allows, their replies not written.
func waitBudgetsFull(t *testing.T, srv *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(ioGuard); ; time.Sleep(time.Millisecond) {
		full := 0
		srv.mu.Lock()
		// served counts the connections past transmitting (under mu),
		// which sets their budget.
		if srv.served == n {
			for cn := range srv.conns {
				cn.budget.mu.Lock()
				if cn.budget.slots == 0 {
					full++
				}
				cn.budget.mu.Unlock()
			}
		}
		srv.mu.Unlock()
		if full == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections have their budget full", full, n)
		}
	}
}

// TestDetectZeroes: an all-zero WRITE becomes a zeroing request when the
// export detects zeroes; FUA on any command flushes.
func TestDetectZeroes(t *testing.T) {
	mem := newMem(memdev.Options{})
	plain := newMem(memdev.Options{})
	s := newTestServer(t, &Export{Dev: mem, DetectZeroes: DetectUnmap, Unmap: true}, &Export{Name: "plain", Dev: plain})
	for _, e := range []struct {
		name string
		dev  *memdev.Dev
	}{{"", mem}, {"plain", plain}} {
		c := dial(t, s)
		c.connect(e.name, false)
		if code, _, _ := c.do(cmdWrite, 0, 4096, 8192, make([]byte, 8192)); code != 0 {
			t.Fatalf("%q: zero write: %d", e.name, code)
		}
		if code, _, _ := c.do(cmdWrite, cmdFlagFUA, 0, 3, []byte{0, 1, 0}); code != 0 {
			t.Fatalf("%q: write: %d", e.name, code)
		}
		if code, _, _ := c.do(cmdRead, cmdFlagFUA, 0, 3, nil); code != 0 {
			t.Fatalf("%q: read with FUA: %d", e.name, code)
		}
		zeroes, writes, flushes := e.dev.M.Zeroes.Load(), e.dev.M.Writes.Load(), e.dev.M.Flushes.Load()
		if e.name == "" && (zeroes != 1 || writes != 1) || e.name == "plain" && (zeroes != 0 || writes != 2) || flushes != 1 {
			t.Errorf("%q: %d zeroes, %d writes, %d flushes", e.name, zeroes, writes, flushes)
		}
	}
}

// TestWriteThrough: on a WriteThrough export (qnbd --cache=writethrough
// or directsync) WRITE and WRITE_ZEROES without FUA are durable once
// acknowledged, on the queued path of a qcow2 image and on the workers:
// a crash right after the replies (no FLUSH) keeps them, data and the
// metadata that maps it. Before, the cache mode only chose O_DIRECT and
// such writes were lost with the server process.
func TestWriteThrough(t *testing.T) {
	d, img := revImage(t)
	s := newTestServer(t, &Export{Dev: img, WriteThrough: true})
	c := dial(t, s)
	c.connect("", false)
	p := pattern(70000, 9)
	if code, _, _ := c.do(cmdWrite, 0, 1000, uint32(len(p)), p); code != 0 {
		t.Fatalf("write: %d", code)
	}
	if code, _, _ := c.do(cmdWrite, 0, 1<<20, 5000, p[:5000]); code != 0 {
		t.Fatalf("write: %d", code)
	}
	if code, _, _ := c.do(cmdWriteZeroes, 0, 30000, 2000, nil); code != 0 {
		t.Fatalf("zeroes: %d", code)
	}
	clone := d.CrashClone(rand.New(rand.NewPCG(3, 4)), 0)
	im2, err := qcow2.OpenDevice(clone, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(p)
	clear(want[29000:31000])
	for _, w := range []struct {
		off  int64
		data []byte
	}{{1000, want}, {1 << 20, p[:5000]}} {
		got := make([]byte, len(w.data))
		if err := block.ReadAt(im2, got, w.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w.data) {
			t.Errorf("write at %d lost in a crash after its reply", w.off)
		}
	}
}

// TestHandshakeLimit: a client that does not finish negotiating in time
// is disconnected; one in transmission is not.
func TestHandshakeLimit(t *testing.T) {
	s := serveTest(t, &Server{Exports: []*Export{{Dev: newMem(memdev.Options{})}}, HandshakeLimit: time.Second})
	idle := dial(t, s)
	idle.greet()
	busy := dial(t, s)
	busy.connect("", false)
	// closed waits (up to ioGuard) for the server to hang up on idle; busy,
	// dialled just after it, is past the limit a little later.
	if !idle.closed() {
		t.Fatal("a client idle in negotiation is still connected")
	}
	time.Sleep(200 * time.Millisecond)
	if code, _, _ := busy.do(cmdFlush, 0, 0, 0, nil); code != 0 {
		t.Fatalf("flush after the handshake limit: %d", code)
	}
}

// notDiscarding is a layer that forwards discards to a device that has
// none (filter.Raw over a file): Discard is ErrNotSupported.
type notDiscarding struct{ block.Device }

func (notDiscarding) Discard(off, n int64) error { return block.ErrNotSupported }

// TestTrimFallsBackToUnmapZeroing: a TRIM on an export whose Discard is
// ErrNotSupported unmaps by zeroing with MayUnmap, as on a device that is
// no Discarder (it was ignored when filters became Discarders).
func TestTrimFallsBackToUnmapZeroing(t *testing.T) {
	mem := newMem(memdev.Options{})
	if mem.Caps().ZeroFlags&block.MayUnmap == 0 {
		t.Fatal("memdev without MayUnmap")
	}
	s := newTestServer(t, &Export{Dev: notDiscarding{mem}, Unmap: true})
	c := dial(t, s)
	c.connect("", false)
	data := bytes.Repeat([]byte{0x5a}, 65536)
	if code, _, _ := c.do(cmdWrite, 0, 0, uint32(len(data)), data); code != 0 {
		t.Fatalf("write: %d", code)
	}
	if code, _, _ := c.do(cmdTrim, 0, 0, uint32(len(data)), nil); code != 0 {
		t.Fatalf("trim: %d", code)
	}
	code, got, _ := c.do(cmdRead, 0, 0, uint32(len(data)), nil)
	if code != 0 || !bytes.Equal(got, make([]byte, len(data))) {
		t.Fatalf("after TRIM: code %d, the range still holds data", code)
	}
}

// TestInfo_BlockSizeUnasked: a client that does not ask for the block
// sizes of an export with a minimum (a probed raw image's 512) gets the
// information and then NBD_REP_ERR_BLOCK_SIZE_REQD on NBD_OPT_INFO, as
// from qemu-nbd 7.2, and a minimum of 1 on NBD_OPT_GO; one that asks
// gets the minimum.
func TestInfo_BlockSizeUnasked(t *testing.T) {
	s := newTestServer(t, &Export{Name: "disk", Dev: newMem(memdev.Options{}), MinBlock: 512})
	c := dial(t, s)
	c.greet()
	if got, want := replies(c.opt(optInfo, infoData("disk"))), "info3 000002000000100002000000; info0 "; !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "; err8") {
		t.Errorf("INFO without block sizes: %s", got)
	}
	if got := replies(c.opt(optInfo, infoData("disk", infoBlockSize))); !strings.HasPrefix(got, "info3 000002000000100002000000; ") || !strings.HasSuffix(got, "; ack") {
		t.Errorf("INFO with block sizes: %s", got)
	}
	if got := replies(c.opt(optGo, infoData("disk"))); !strings.HasPrefix(got, "info3 000000010000100002000000; ") || !strings.HasSuffix(got, "; ack") {
		t.Errorf("GO without block sizes: %s", got)
	}
}
