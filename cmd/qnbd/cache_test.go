package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// TestCacheCommand_UnlikeQemuNbd pins a difference kept: NBD_CMD_CACHE
// succeeds through both servers, but qemu-nbd 7.2 serves it as a
// copy-on-read prefetch (BDRV_REQ_COPY_ON_READ), which copies what the
// range reads from the backing file into the overlay, so the overlay's
// map changes; qnbd takes it as the hint the spec makes of it and
// changes nothing (its engine caches what it reads on its own).
func TestCacheCommand_UnlikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdsh")
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	dir := shortDir(t)
	base := filepath.Join(dir, "base.qcow2")
	sh(t, "qemu-img", "create", "-f", "qcow2", base, "4M")
	sh(t, "qemu-io", "-c", "write -P 7 0 1M", base)
	for _, srv := range []string{"qemu-nbd", "qnbd"} {
		ov := filepath.Join(dir, srv+".qcow2")
		sh(t, "qemu-img", "create", "-f", "qcow2", "-b", base, "-F", "qcow2", ov)
		sock := filepath.Join(dir, "c.sock")
		// Both stop by themselves once the client left (qemu-nbd
		// without -t, qnbd --once), so that they close the image
		// cleanly.
		var s *server
		if srv == "qemu-nbd" {
			s = startQemuNbdOnce(t, sock, "-f", "qcow2", ov)
		} else {
			s = start(t, "", sock, "-k", sock, "--once", "-f", "qcow2", ov)
		}
		for i := 0; ; i++ {
			cmd := exec.Command("nbdsh", "-u", "nbd+unix:///?socket="+sock, "-c", "h.cache(65536, 0)\nassert h.pread(4096, 0) == b'\\x07' * 4096")
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err == nil {
				break
			}
			// Refused between qemu-nbd's bind and its listen
			// (startQemuNbdOnce): no client yet, try again.
			if i == 500 || !strings.Contains(string(out), "Connection refused") {
				t.Fatalf("%s: nbdsh: %v\n%s", srv, err, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := <-s.done; err != nil {
			t.Fatalf("%s: %v\n%s", srv, err, s.stderr.String())
		}
		m := qemuMapDepth(t, ov)
		if want := map[string]string{"qemu-nbd": "0+65536@0 65536+983040@1", "qnbd": "0+1048576@1"}[srv]; m != want {
			t.Errorf("%s: overlay's data after CACHE: %s, want %s", srv, m, want)
		}
	}
}

// qemuMapDepth lists the data extents of qemu-img map: start+length@depth.
func qemuMapDepth(t *testing.T, img string) string {
	var es []struct {
		Start, Length int64
		Depth         int
		Data          bool
	}
	if err := json.Unmarshal([]byte(sh(t, "qemu-img", "map", "--output=json", img)), &es); err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, e := range es {
		if e.Data {
			if s != "" {
				s += " "
			}
			s += fmt.Sprintf("%d+%d@%d", e.Start, e.Length, e.Depth)
		}
	}
	return s
}

// startQemuNbdOnce runs qemu-nbd -k sock args, which exits once its
// client left, and waits until its socket exists (without connecting,
// which would count as that client). The file exists from its bind, a
// moment before its listen: the client retries a refused connection.
func startQemuNbdOnce(t *testing.T, sock string, args ...string) *server {
	t.Helper()
	s := spawn(t, exec.Command("qemu-nbd", append([]string{"-k", sock}, args...)...))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd does not listen\n%s", s.stderr.String())
		}
	}
}
