package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// client is a minimal NBD client for the tests: it speaks the wire format
// byte by byte so that tests can also send what no real client sends.
// Each read and write gets ioGuard from its start.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

// ioGuard is the hang guard of each read or write of a test client (and
// of closed's wait for the end of the stream). It is set before every
// operation, not once for the connection: a deadline for the whole
// connection (20 s from dial) was used up by a long test on a loaded
// machine (TestQueuedPipelinedReadAfterWrite's writes timed out in CI),
// while a wait for one reply or one write only hangs when something is
// broken. A test passes no slower for it.
const ioGuard = 60 * time.Second

// testServer is a Server listening on a Unix socket of its own.
type testServer struct {
	*Server
	addr string
}

// serveTest starts s on a fresh Unix socket; the test's cleanup shuts it
// down and checks that every connection ended.
func serveTest(t testing.TB, s *Server) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	addr := filepath.Join(dir, "s")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		// A hang guard: Shutdown returns once the connections end, which
		// takes long only on a loaded machine or when something hangs.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
		os.RemoveAll(dir)
	})
	return &testServer{s, addr}
}

func dial(t testing.TB, s *testServer) *client {
	t.Helper()
	a, err := net.Dial("unix", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, nc: a, r: bufio.NewReader(a)}
	t.Cleanup(func() { a.Close() })
	return c
}

// greet reads the greeting and sends the client flags.
func (c *client) greet() {
	c.t.Helper()
	var g [18]byte
	c.read(g[:])
	if binary.BigEndian.Uint64(g[0:]) != magicInit || binary.BigEndian.Uint64(g[8:]) != magicOpts {
		c.t.Fatalf("bad greeting % x", g)
	}
	c.write(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes))
}

func (c *client) read(b []byte) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(ioGuard))
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(ioGuard))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) sendOpt(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicOpts)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *client) readOptReply() optReply {
	c.t.Helper()
	var h [20]byte
	c.read(h[:])
	if binary.BigEndian.Uint64(h[0:]) != magicRep {
		c.t.Fatalf("bad option reply magic % x", h)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	c.read(r.data)
	return r
}

// opt sends an option and collects replies up to the final one (an ACK
// or an error).
func (c *client) opt(opt uint32, data []byte) []optReply {
	c.t.Helper()
	c.sendOpt(opt, data)
	var rs []optReply
	for {
		r := c.readOptReply()
		if r.opt != opt {
			c.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		rs = append(rs, r)
		if r.typ == repAck || r.typ&repErrBit != 0 {
			return rs
		}
	}
}

func infoData(name string, reqs ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(reqs)))
	for _, q := range reqs {
		b = binary.BigEndian.AppendUint16(b, q)
	}
	return b
}

func metaData(name string, qs ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(qs)))
	for _, q := range qs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// connect negotiates (structured replies and the contexts if asked) and
// enters transmission on export name; it returns the size and flags.
func (c *client) connect(name string, structured bool, contexts ...string) (int64, uint16) {
	c.t.Helper()
	c.greet()
	if structured {
		if rs := c.opt(optStructuredReply, nil); rs[0].typ != repAck {
			c.t.Fatalf("structured reply: %x", rs[0].typ)
		}
		if len(contexts) > 0 {
			rs := c.opt(optSetMetaContext, metaData(name, contexts...))
			if len(rs) != len(contexts)+1 {
				c.t.Fatalf("set meta context: %d replies for %v", len(rs), contexts)
			}
		}
	}
	var size int64
	var flags uint16
	for _, r := range c.opt(optGo, infoData(name)) {
		switch {
		case r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport:
			size = int64(binary.BigEndian.Uint64(r.data[2:]))
			flags = binary.BigEndian.Uint16(r.data[10:])
		case r.typ&repErrBit != 0:
			c.t.Fatalf("GO: error 0x%x: %s", r.typ, r.data)
		}
	}
	return size, flags
}

func (c *client) request(typ, flags uint16, cookie, off uint64, n uint32, payload []byte) {
	c.t.Helper()
	if err := c.tryRequest(typ, flags, cookie, off, n, payload); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// tryRequest is request for a test in which the server may close the
// connection: it returns the write's error.
func (c *client) tryRequest(typ, flags uint16, cookie, off uint64, n uint32, payload []byte) error {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	c.nc.SetWriteDeadline(time.Now().Add(ioGuard))
	_, err := c.nc.Write(append(b, payload...))
	return err
}

// chunk is one reply: a simple reply is one chunk with done set.
type chunk struct {
	simple bool
	flags  uint16
	typ    uint16
	cookie uint64
	err    uint32 // simple reply error or error chunk value
	data   []byte // chunk payload (for simple replies: read data, if readLen)
}

// readReply reads one simple reply (with readLen bytes of data when it
// succeeded) or one structured chunk.
func (c *client) readReply(readLen int) chunk {
	c.t.Helper()
	ch, err := c.tryReply(func(uint64) int { return readLen })
	if err != nil {
		c.t.Fatal(err)
	}
	return ch
}

// tryReply reads one reply; readLen gives the data length of a
// successful simple reply by cookie.
func (c *client) tryReply(readLen func(cookie uint64) int) (chunk, error) {
	c.nc.SetReadDeadline(time.Now().Add(ioGuard))
	var m [4]byte
	if _, err := io.ReadFull(c.r, m[:]); err != nil {
		return chunk{}, err
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case magicSimple:
		var h [12]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return chunk{}, err
		}
		ch := chunk{simple: true, flags: replyFlagDone, err: binary.BigEndian.Uint32(h[0:]), cookie: binary.BigEndian.Uint64(h[4:])}
		if n := readLen(ch.cookie); ch.err == 0 && n > 0 {
			ch.data = make([]byte, n)
			if _, err := io.ReadFull(c.r, ch.data); err != nil {
				return chunk{}, err
			}
		}
		return ch, nil
	case magicStruct:
		var h [16]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return chunk{}, err
		}
		ch := chunk{flags: binary.BigEndian.Uint16(h[0:]), typ: binary.BigEndian.Uint16(h[2:]), cookie: binary.BigEndian.Uint64(h[4:])}
		ch.data = make([]byte, binary.BigEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(c.r, ch.data); err != nil {
			return chunk{}, err
		}
		if ch.typ&(1<<15) != 0 {
			ch.err = binary.BigEndian.Uint32(ch.data)
		}
		return ch, nil
	}
	return chunk{}, fmt.Errorf("bad reply magic % x", m)
}

// do sends one request and waits for its whole reply (the test issues
// one request at a time): the error, and for reads the data assembled
// from the chunks.
func (c *client) do(typ, flags uint16, off uint64, n uint32, payload []byte) (uint32, []byte, []chunk) {
	c.t.Helper()
	c.request(typ, flags, 7, off, n, payload)
	var chunks []chunk
	var data []byte
	if typ == cmdRead {
		data = make([]byte, n)
	}
	for {
		rl := 0
		if typ == cmdRead {
			rl = int(n)
		}
		ch := c.readReply(rl)
		if ch.cookie != 7 {
			c.t.Fatalf("cookie %d", ch.cookie)
		}
		chunks = append(chunks, ch)
		if ch.err != 0 {
			// Drain to DONE.
			for ch.flags&replyFlagDone == 0 {
				ch = c.readReply(0)
			}
			return chunks[0].err, nil, chunks
		}
		if ch.simple {
			if typ == cmdRead {
				copy(data, ch.data)
			}
			return 0, data, chunks
		}
		switch ch.typ {
		case replyOffsetData:
			o := binary.BigEndian.Uint64(ch.data)
			copy(data[o-off:], ch.data[8:])
		case replyOffsetHole:
			o := binary.BigEndian.Uint64(ch.data)
			hn := binary.BigEndian.Uint32(ch.data[8:])
			clear(data[o-off : o-off+uint64(hn)])
		}
		if ch.flags&replyFlagDone != 0 {
			return 0, data, chunks
		}
	}
}

// closed reports whether the server closed the connection (reads EOF).
// Every caller expects the close, so the wait is the hang guard (it was
// 5 s, which a slow close on a loaded machine could outlast).
func (c *client) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(ioGuard))
	_, err := c.r.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
