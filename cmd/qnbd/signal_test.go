package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a process's stderr that the test reads while the
// process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the process's stderr has s, failing the test if
// the process ends first or the hang guard expires.
func waitFor(t *testing.T, stderr *lockedBuffer, done <-chan error, s string) {
	t.Helper()
	for guard := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), s); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("qnbd ended (%v) before %q:\n%s", err, s, stderr.String())
		default:
		}
		if time.Now().After(guard) {
			t.Fatalf("no %q from qnbd:\n%s", s, stderr.String())
		}
	}
}

// nbdRequest is a raw request header, with the payload of a WRITE.
func nbdRequest(typ uint16, cookie, off uint64, n uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x25609513)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	return append(b, payload...)
}

// rawGo negotiates export "" with NBD_OPT_GO, without structured
// replies: READ replies then carry their whole payload.
func rawGo(t *testing.T, nc net.Conn) {
	t.Helper()
	var g [18]byte
	if _, err := io.ReadFull(nc, g[:]); err != nil {
		t.Fatal(err)
	}
	opt := binary.BigEndian.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	opt = binary.BigEndian.AppendUint64(opt, 0x49484156454F5054)
	opt = binary.BigEndian.AppendUint32(opt, 7)   // NBD_OPT_GO
	opt = binary.BigEndian.AppendUint32(opt, 4+2) // data length
	opt = append(opt, 0, 0, 0, 0, 0, 0)           // name "", no info requests
	if _, err := nc.Write(opt); err != nil {
		t.Fatal(err)
	}
	for {
		var h [20]byte
		if _, err := io.ReadFull(nc, h[:]); err != nil {
			t.Fatal(err)
		}
		typ := binary.BigEndian.Uint32(h[12:])
		if _, err := io.CopyN(io.Discard, nc, int64(binary.BigEndian.Uint32(h[16:]))); err != nil {
			t.Fatal(err)
		}
		if typ == 1 { // NBD_REP_ACK
			return
		}
		if typ&(1<<31) != 0 {
			t.Fatalf("NBD_OPT_GO: error 0x%x", typ)
		}
	}
}

// TestSecondSignal: a second SIGTERM during a graceful shutdown that a
// client holds (it sent reads worth 256 MiB and reads no reply) closes
// the connections at once instead of being ignored; the image is still
// flushed and closed (qemu-img check clean) and keeps the write that
// was acknowledged and flushed before. qemu-nbd 7.2 waits for such a
// client, whatever the signals.
func TestSecondSignal(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	img, cmd, done, stderr, nc := startRawClient(t)
	sock := filepath.Join(filepath.Dir(img), "s")
	// Acknowledged and flushed: must survive whatever follows.
	if _, err := nc.Write(append(nbdRequest(1, 1, 0, 1<<20, bytes.Repeat([]byte{0x5a}, 1<<20)), nbdRequest(3, 2, 0, 0, nil)...)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var r [16]byte
		if _, err := io.ReadFull(nc, r[:]); err != nil {
			t.Fatal(err)
		}
		if code := binary.BigEndian.Uint32(r[4:]); code != 0 {
			t.Fatalf("request %d: error %d", binary.BigEndian.Uint64(r[8:]), code)
		}
	}
	// Then writes that are never flushed, and reads whose replies the
	// client does not read: the server's reply writes block.
	var reqs []byte
	for i := range 8 {
		reqs = append(reqs, nbdRequest(1, uint64(10+i), uint64(8+i)<<20, 1<<20, bytes.Repeat([]byte{0x66}, 1<<20))...)
	}
	for i := range 8 {
		reqs = append(reqs, nbdRequest(0, uint64(20+i), 0, 32<<20, nil)...)
	}
	if _, err := nc.Write(reqs); err != nil {
		t.Fatal(err)
	}
	// Up to the header of the first READ reply: the server is then
	// writing 32 MiB to a client that reads no more, and the shutdown
	// waits for that write (up to nbd's stopGrace).
	for {
		var r [16]byte
		if _, err := io.ReadFull(nc, r[:]); err != nil {
			t.Fatal(err)
		}
		if code := binary.BigEndian.Uint32(r[4:]); code != 0 {
			t.Fatalf("request %d: error %d", binary.BigEndian.Uint64(r[8:]), code)
		}
		if binary.BigEndian.Uint64(r[8:]) >= 20 {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, stderr, done, "shutting down")
	time.Sleep(signalBurst) // a second request, not the same one (stopper)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("qnbd after the second SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("qnbd still running after two SIGTERMs\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "during the shutdown: closing the connections now") {
		t.Fatalf("the second SIGTERM was not acted on:\n%s", stderr.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 0x5a 0 1M", img)
}

// TestStopperStages: the first stop starts the graceful shutdown, a
// signal during it forces the shutdown, one more exits with status 1;
// signals less than signalBurst apart are one (timeout(1) sends two at
// once, and a burst of three exited without flushing); a shutdown the
// last client started is forced by the first signal.
func TestStopperStages(t *testing.T) {
	var lines []string
	exited := -1
	clock := time.Unix(1e9, 0)
	newSt := func() *stopper {
		st := newStopper(func(f string, a ...any) { lines = append(lines, f) })
		st.exit = func(code int) { exited = code }
		st.now = func() time.Time { return clock }
		return st
	}
	st := newSt()
	st.signal(syscall.SIGINT)
	if why := <-st.stop; why != syscall.SIGINT.String() || st.force.Err() != nil {
		t.Fatalf("first signal: stop %q, force %v", why, st.force.Err())
	}
	// A burst: the same request.
	clock = clock.Add(signalBurst / 2)
	st.signal(syscall.SIGTERM)
	st.signal(syscall.SIGTERM)
	if st.force.Err() != nil || exited != -1 || len(lines) != 0 {
		t.Fatalf("signals in a burst: force %v, exit %d, log %q", st.force.Err(), exited, lines)
	}
	clock = clock.Add(signalBurst)
	st.quit("last client disconnected") // no second stop
	st.signal(syscall.SIGTERM)
	if st.force.Err() == nil || exited != -1 || len(st.stop) != 0 {
		t.Fatalf("second signal: force %v, exit %d, stops %d", st.force.Err(), exited, len(st.stop))
	}
	st.signal(syscall.SIGTERM) // in the same burst
	if exited != -1 {
		t.Fatal("a signal in the second one's burst exited")
	}
	clock = clock.Add(signalBurst)
	st.signal(syscall.SIGTERM)
	if exited != 1 || len(lines) != 2 {
		t.Fatalf("third signal: exit %d, log %q", exited, lines)
	}

	st = newSt()
	st.quit("last client disconnected")
	<-st.stop
	st.signal(syscall.SIGTERM)
	if st.force.Err() == nil {
		t.Fatal("a signal during a shutdown the last client started does not force it")
	}
}

// TestSignalBurstKeepsWrites: three stop signals at once (timeout(1)
// alone sends two SIGTERMs) are one request: the server shuts down gracefully, and the
// writes it acknowledged without a flush are in the image. The burst
// exited without flushing, and the acknowledged writes were gone with
// qemu-img check finding nothing wrong.
func TestSignalBurstKeepsWrites(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	img, cmd, done, stderr, nc := startRawClient(t)
	// Acknowledged, never flushed, one new cluster each.
	var reqs []byte
	for i := range 64 {
		reqs = append(reqs, nbdRequest(1, uint64(i), uint64(i)<<20, 64<<10, bytes.Repeat([]byte{byte(i + 1)}, 64<<10))...)
	}
	if _, err := nc.Write(reqs); err != nil {
		t.Fatal(err)
	}
	for range 64 {
		var r [16]byte
		if _, err := io.ReadFull(nc, r[:]); err != nil {
			t.Fatal(err)
		}
		if code := binary.BigEndian.Uint32(r[4:]); code != 0 {
			t.Fatalf("request %d: error %d", binary.BigEndian.Uint64(r[8:]), code)
		}
	}
	// Reads whose replies the client does not read hold the shutdown
	// (the server's reply writes block), so that every signal of the
	// burst finds it running.
	reqs = nil
	for i := range 8 {
		reqs = append(reqs, nbdRequest(0, uint64(100+i), 0, 32<<20, nil)...)
	}
	if _, err := nc.Write(reqs); err != nil {
		t.Fatal(err)
	}
	// Three stop signals of different kinds, sent at once: pending
	// signals of one kind merge (in the kernel and in Go's runtime),
	// so three SIGTERMs had to be sent apart (10 ms), and a sender
	// stalled for signalBurst on a loaded machine made them two
	// requests; signals of different kinds do not merge, and need no
	// gap. The server takes them on its own clock, which the test does
	// not set: only a stall of a second in its signal goroutine could
	// still split the burst.
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		cmd.Process.Signal(sig)
	}
	nc.Close() // the graceful shutdown waits for the client
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("qnbd after a burst of stop signals: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("qnbd still running\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "during the shutdown") {
		t.Errorf("the burst was taken as more than one signal:\n%s", stderr.String())
	}
	check(t, img)
	var cmds []string
	for i := range 64 {
		cmds = append(cmds, "-c", fmt.Sprintf("read -P %d %d 64k", i+1, i<<20))
	}
	sh(t, "qemu-io", append(cmds, img)...)
}

// startRawClient starts qnbd -v on a new 64M image (socket "s" beside
// it) and connects a raw client that has negotiated its default export:
// the image, the server, its exit, its stderr and the connection.
func startRawClient(t *testing.T) (img string, cmd *exec.Cmd, done chan error, stderr *lockedBuffer, nc net.Conn) {
	t.Helper()
	dir, img := create(t, "64M")
	sock := filepath.Join(dir, "s")
	stderr = &lockedBuffer{}
	cmd = exec.Command(filepath.Join(bin, "qnbd"), "-v", "-k", sock, img)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	waitFor(t, stderr, done, "serving")
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	rawGo(t, nc)
	return img, cmd, done, stderr, nc
}
