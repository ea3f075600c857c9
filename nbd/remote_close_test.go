package nbd

import (
	"bytes"
	"errors"
	"net"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// handshakeOnly is serverScript's handshake: the server then answers no
// request.
func handshakeOnly() [][]byte { return serverScript(false)[:5] }

// pendingCalls is the number of requests waiting for a reply.
func (c *Client) pendingCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// TestClient_CloseServerSilent: Close of a client whose server stopped
// answering returns after CloseTimeout, and the request it cut off fails
// (it waited for that request for ever: found by the review of the
// client's Close).
func TestClient_CloseServerSilent(t *testing.T) {
	c, err := hostileServerOpts(t, ClientOptions{HandshakeTimeout: 5 * time.Second, CloseTimeout: 200 * time.Millisecond}, handshakeOnly()...)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { read <- block.ReadAt(c, make([]byte, 4096), 0) }()
	for c.pendingCalls() == 0 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close waits for ever for a request the server does not answer")
	}
	if err := <-read; !errors.Is(err, errCloseTimeout) {
		t.Fatalf("the read Close cut off: %v, want %v", err, errCloseTimeout)
	}
}

// TestClient_CloseServerNotReading: a write blocked sending to a server
// that no longer reads does not hold Close past CloseTimeout either, and
// fails.
func TestClient_CloseServerNotReading(t *testing.T) {
	srv, cli := net.Pipe()
	parts := handshakeOnly()
	go func() {
		// The handshake, each part after one message of the client's,
		// then nothing read: a pipe's writes then block.
		buf := make([]byte, 64<<10)
		srv.Write(parts[0])
		for _, p := range parts[1:] {
			if _, err := srv.Read(buf); err != nil {
				return
			}
			if len(p) > 0 {
				srv.Write(p)
			}
		}
	}()
	t.Cleanup(func() { srv.Close() })
	c, err := NewClient(cli, "", ClientOptions{HandshakeTimeout: 5 * time.Second, CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	write := make(chan error, 1)
	go func() { write <- c.Writev(0, [][]byte{make([]byte, 64<<10)}) }()
	for c.pendingCalls() == 0 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close waits for ever for a write the server does not read")
	}
	if err := <-write; err == nil {
		t.Fatal("a write the server never read succeeded")
	}
}

// countDev counts its flushes and fails its writes when failWrites.
type countDev struct {
	*memdev.Dev
	flushes    atomic.Int64
	failWrites atomic.Bool
}

func (d *countDev) Flush() error {
	d.flushes.Add(1)
	return d.Dev.Flush()
}

func (d *countDev) Writev(off int64, bufs [][]byte) error {
	if d.failWrites.Load() {
		return syscall.EIO
	}
	return d.Dev.Writev(off, bufs)
}

// TestClient_CloseFlushesLikeQemu: Close flushes the writes sent since
// the last flush, as qemu-io's close of an NBD node does (bdrv_close
// flushes), so that a server with a write-back cache does not keep
// acknowledged writes only there (Close sent NBD_CMD_DISC alone); a
// client that wrote nothing, or flushed since, does not flush again.
func TestClient_CloseFlushesLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-io")
	dev := &countDev{Dev: memdev.FromBytes(make([]byte, 1<<20), memdev.Options{})}
	s := newTestServer(t, &Export{Dev: dev})
	uri := "nbd+unix:///?socket=" + s.addr
	flushes := func(f func()) int64 {
		before := dev.flushes.Load()
		f()
		// The server's flush may run after the client left.
		time.Sleep(100 * time.Millisecond)
		return dev.flushes.Load() - before
	}
	qemu := func(args ...string) func() {
		return func() {
			if out, err := exec.Command("qemu-io", append([]string{"-f", "raw"}, append(args, uri)...)...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-io %v: %v\n%s", args, err, out)
			}
		}
	}
	ours := func(write, flush bool) func() {
		return func() {
			c := dialExport(t, s, "", ClientOptions{})
			if write {
				if err := c.Writev(512, [][]byte{pattern(512, 1)}); err != nil {
					t.Fatal(err)
				}
			} else if err := block.ReadAt(c, make([]byte, 512), 0); err != nil {
				t.Fatal(err)
			}
			if flush {
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// qemu-io flushes at its close whatever it did (once more for a
	// write; NBD_CMD_FLUSH as often as the server saw FLUSH here: 1 for
	// a read, 2 for a write, 3 for a write and a flush); the Client
	// flushes once after writes it has not flushed, and only then.
	if q, u := flushes(qemu("-c", "write -P 1 512 512")), flushes(ours(true, false)); q == 0 || u != 1 {
		t.Errorf("a write, then close: the server saw %d flushes from qemu-io, %d from the Client (want 1)", q, u)
	}
	if u := flushes(ours(true, true)); u != 1 {
		t.Errorf("a write, a flush, then close: %d flushes from the Client, want 1", u)
	}
	if u := flushes(ours(false, false)); u != 0 {
		t.Errorf("a read, then close: %d flushes from the Client, want 0", u)
	}
	if !bytes.Equal(dev.Bytes()[512:1024], pattern(512, 1)) && !bytes.Equal(dev.Bytes()[512:1024], bytes.Repeat([]byte{1}, 512)) {
		t.Error("the write is not there")
	}
}

// TestClient_WriteFailed: a write the server fails is the caller's error
// (EIO), not acknowledged, and a failed flush at Close is Close's.
func TestClient_WriteFailed(t *testing.T) {
	dev := &countDev{Dev: memdev.FromBytes(make([]byte, 1<<20), memdev.Options{})}
	s := newTestServer(t, &Export{Dev: dev})
	c := dialExport(t, s, "", ClientOptions{})
	dev.failWrites.Store(true)
	if err := c.Writev(0, [][]byte{pattern(4096, 3)}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a write the server failed: %v, want EIO", err)
	}
	if !bytes.Equal(dev.Bytes()[:4096], make([]byte, 4096)) {
		t.Fatal("the failed write is there")
	}
}
