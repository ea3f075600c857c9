package testkit

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DirtyMap is nbdinfo's map of the persistent dirty bitmap name of the
// qcow2 image at path, as qemu-nbd -B exports it read-only: QEMU's view
// of a bitmap, for tests that compare bitmaps with QEMU's.
func DirtyMap(t testing.TB, path, name string) string {
	t.Helper()
	NeedTools(t, "qemu-nbd", "nbdinfo")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	srv := exec.Command("qemu-nbd", "-r", "-f", "qcow2", "-B", name, "-k", sock, path)
	var stderr bytes.Buffer
	srv.Stderr = &stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 500 {
			t.Fatalf("qemu-nbd -B %s %s did not start: %s", name, path, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The socket's file exists from qemu-nbd's bind, before its listen:
	// a connection in between is refused (seen once on a loaded
	// machine). A refused connection is no client, so qemu-nbd, which
	// exits after its first client, is still there to try again.
	for i := 0; ; i++ {
		out, errOut, code := Run(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+name, "nbd+unix:///?socket="+sock)
		if code == 0 {
			return out
		}
		if i == 500 || !strings.Contains(errOut, "Connection refused") {
			t.Fatalf("nbdinfo of bitmap %s of %s: exit %d: %s(qemu-nbd: %s)", name, path, code, errOut, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ServeQemuNbd runs qemu-nbd with args (an image and its options) on a
// Unix socket of a short directory of its own (a socket path is at most
// 107 bytes), taking up to 8 clients at once, for as long as the test
// runs; it returns when qemu-nbd accepts connections, with the socket's
// path. The test is skipped without qemu-nbd.
func ServeQemuNbd(t testing.TB, args ...string) string {
	t.Helper()
	NeedTools(t, "qemu-nbd")
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	cmd := exec.Command("qemu-nbd", append([]string{"--persistent", "-e", "8", "-k", sock}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if i == 500 {
			t.Fatalf("qemu-nbd %v did not start: %s", args, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
