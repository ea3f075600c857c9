package nbd

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// dialExport connects a Client to the export named name of s.
func dialExport(t testing.TB, s *testServer, name string, o ClientOptions) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Address{Network: "unix", Addr: s.addr, Export: name}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClient_Conformance runs the block.Device invariants over a Client
// of this package's server: a memdev exported, read and written through
// the wire.
func TestClient_Conformance(t *testing.T) {
	mems := map[block.Device]*memdev.Dev{}
	var mu sync.Mutex
	blocktest.Run(t, func(t *testing.T) block.Device {
		mem := memdev.FromBytes(make([]byte, 4<<20), memdev.Options{})
		s := newTestServer(t, &Export{Dev: mem, Unmap: true})
		c := dialExport(t, s, "", ClientOptions{})
		mu.Lock()
		mems[c] = mem
		mu.Unlock()
		return c
	}, blocktest.Config{
		FixedSize:  true,
		PastEndErr: errPastEnd,
		Truncate:   blocktest.TruncateNone,
		Crash: func(t *testing.T, d block.Device) block.Device {
			mu.Lock()
			defer mu.Unlock()
			return mems[d].CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
		},
	})
}

func TestClient_ReadWriteZeroStatus(t *testing.T) {
	mem := memdev.FromBytes(make([]byte, 4<<20), memdev.Options{})
	s := newTestServer(t, &Export{Name: "disk", Dev: mem, Unmap: true})
	c := dialExport(t, s, "disk", ClientOptions{})
	if rep, bs := c.Structured(); !rep || !bs {
		t.Fatalf("structured replies %v, block status %v: want both", rep, bs)
	}
	if n, _ := c.Size(); n != 4<<20 {
		t.Fatalf("size %d", n)
	}
	// A write larger than the payload limit goes out in pieces.
	c.maxPayload = 64 << 10
	data := pattern(300<<10, 3)
	if err := c.Writev(100, [][]byte{data[:1000], data[1000:]}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+50)
	if err := block.ReadAt(c, got, 100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, 50)) {
		t.Fatal("read back differs")
	}
	// Past the end: reads are zeros (B2), writes ENOSPC.
	tail := []byte{1, 2, 3, 4}
	if err := block.ReadAt(c, tail, 4<<20-2); err != nil || !bytes.Equal(tail, []byte{0, 0, 0, 0}) {
		t.Fatalf("read across the end: %v %v", err, tail)
	}
	if err := c.Writev(4<<20-2, [][]byte{tail}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write across the end: %v, want ENOSPC", err)
	}
	if err := c.WriteZeroes(64<<10, 128<<10, block.MayUnmap); err != nil {
		t.Fatal(err)
	}
	if err := block.ReadAt(c, got[:128<<10], 64<<10); err != nil || !bytes.Equal(got[:128<<10], make([]byte, 128<<10)) {
		t.Fatalf("zeroed range: %v", err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	// Block status: a memdev says nothing of holes, so the server
	// reports data throughout (TestClient_QemuNbd reads holes).
	data2, n, err := c.DataRun(0, 4<<20)
	if err != nil || !data2 || n != 4<<20 {
		t.Fatalf("DataRun(0): %v %d %v", data2, n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Flush after Close: %v", err)
	}
	if err := block.ReadAt(c, got[:1], 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

func TestClient_ReadOnly(t *testing.T) {
	mem := newMem(memdev.Options{})
	s := newTestServer(t, &Export{Name: "ro", Dev: mem, ReadOnly: true}, &Export{Name: "rw", Dev: mem})
	c := dialExport(t, s, "ro", ClientOptions{})
	if err := c.Writev(0, [][]byte{{1}}); !errors.Is(err, block.ErrReadOnly) {
		t.Fatalf("write to a read-only export: %v", err)
	}
	c2 := dialExport(t, s, "rw", ClientOptions{ReadOnly: true})
	if err := c2.WriteZeroes(0, 512, 0); !errors.Is(err, block.ErrReadOnly) {
		t.Fatalf("zeroes through a read-only client: %v", err)
	}
}

func TestClient_UnknownExport(t *testing.T) {
	s := newTestServer(t, &Export{Name: "disk", Dev: newMem(memdev.Options{})})
	_, err := Dial(context.Background(), Address{Network: "unix", Addr: s.addr, Export: "nope"}, ClientOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "Requested export not available\nserver reported: ") {
		t.Fatalf("unknown export: %v", err)
	}
	_, err = Dial(context.Background(), Address{Network: "unix", Addr: filepath.Join(t.TempDir(), "none")}, ClientOptions{})
	if err == nil || !strings.HasSuffix(err.Error(), "': No such file or directory") || !strings.HasPrefix(err.Error(), "Failed to connect to '") {
		t.Fatalf("no socket: %v", err)
	}
}

// TestClient_SimpleReplies: without structured replies reads are simple
// replies, and every byte is data.
func TestClient_SimpleReplies(t *testing.T) {
	mem := newMem(memdev.Options{})
	s := newTestServer(t, &Export{Dev: mem})
	c := dialExport(t, s, "", ClientOptions{NoStructured: true})
	if err := c.Writev(4096, [][]byte{pattern(8192, 9)}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if err := block.ReadAt(c, got, 4096); err != nil || !bytes.Equal(got, pattern(8192, 9)) {
		t.Fatalf("read: %v", err)
	}
	if d, n, err := c.DataRun(0, 1<<20); err != nil || !d || n != 1<<20 {
		t.Fatalf("DataRun without block status: %v %d %v", d, n, err)
	}
}

// TestClient_ConcurrentRequests: many goroutines' requests share the
// connection, their replies matched by cookie.
func TestClient_ConcurrentRequests(t *testing.T) {
	mem := memdev.FromBytes(make([]byte, 8<<20), memdev.Options{})
	s := newTestServer(t, &Export{Dev: mem})
	c := dialExport(t, s, "", ClientOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(g) * 512 << 10
			for i := range 20 {
				p := pattern(32<<10, byte(g*20+i))
				at := off + int64(i)*(16<<10)
				if err := c.Writev(at, [][]byte{p}); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(p))
				if err := block.ReadAt(c, got, at); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, p) {
					errs <- errors.New("read back differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestClient_QemuNbd: a Client of qemu-nbd writes what qemu-img then
// reads in the file, zeroes and trims as qemu-nbd takes them, and reads
// holes from its block status.
func TestClient_QemuNbd(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", img, "8M").CombinedOutput(); err != nil {
		t.Skipf("qemu-img: %v %s", err, out)
	}
	sock := testkit.ServeQemuNbd(t, "-f", "qcow2", "--discard=unmap", img)
	c, err := Dial(context.Background(), Address{Network: "unix", Addr: sock}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Flags()&FlagSendFastZero == 0 || c.Caps().ZeroFlags&block.Allocate == 0 {
		t.Fatalf("qemu-nbd's flags %#x: no fast zero", c.Flags())
	}
	p := pattern(1<<20, 5)
	if err := c.Writev(1<<20, [][]byte{p}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(1<<20+64<<10, 64<<10, block.MayUnmap); err != nil {
		t.Fatal(err)
	}
	clear(p[64<<10 : 128<<10])
	got := make([]byte, 2<<20)
	if err := block.ReadAt(c, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) || !bytes.Equal(got[1<<20:], p) {
		t.Fatal("read back through qemu-nbd differs")
	}
	// Block status: the first MiB is a hole, the second data but for the
	// zeroed cluster.
	want := []struct {
		data bool
		n    int64
	}{{false, 1 << 20}, {true, 64 << 10}, {false, 64 << 10}, {true, 896 << 10}, {false, 6 << 20}}
	off := int64(0)
	for i, w := range want {
		d, n, err := c.DataRun(off, 8<<20-off)
		if err != nil || d != w.data || n != w.n {
			t.Fatalf("extent %d at %d: data %v, %d bytes, %v; want %v, %d", i, off, d, n, err, w.data, w.n)
		}
		off += n
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want2 := filepath.Join(dir, "want")
	os.WriteFile(want2, append(make([]byte, 1<<20), p...), 0o644)
	out, err := exec.Command("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", want2, img).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare: %v %s", err, out)
	}
}

// hostileServer is a server that sends parts, whatever the client
// says: one part is written at once, beside a reader that drains what
// the client sends, and the connection closes after it; several go out
// one per message the client sends (the first before any), and the
// connection stays until the client closes it.
func hostileServer(t testing.TB, parts ...[]byte) (*Client, error) {
	return hostileServerOpts(t, ClientOptions{HandshakeTimeout: 5 * time.Second}, parts...)
}

// hostileServerOpts is hostileServer with the client's options o.
func hostileServerOpts(t testing.TB, o ClientOptions, parts ...[]byte) (*Client, error) {
	srv, cli := net.Pipe()
	go func() {
		defer srv.Close()
		buf := make([]byte, 1<<20)
		if len(parts) == 1 {
			go func() {
				for {
					if _, err := srv.Read(buf); err != nil {
						return
					}
				}
			}()
			srv.Write(parts[0])
			return
		}
		srv.Write(parts[0])
		for _, p := range parts[1:] {
			if _, err := srv.Read(buf); err != nil {
				return
			}
			if len(p) > 0 {
				if _, err := srv.Write(p); err != nil {
					return
				}
			}
		}
		for {
			if _, err := srv.Read(buf); err != nil {
				return
			}
		}
	}()
	return NewClient(cli, "", o)
}
