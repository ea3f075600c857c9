package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestSocketActivation: libnbd's tools start a server with systemd's
// socket activation (nbdinfo -- [ qnbd IMG ]: LISTEN_PID, LISTEN_FDS,
// the socket as descriptor 3), as they start qemu-nbd; qnbd ignored it,
// listened on TCP 10809, and the client waited for ever. A copy through
// it lands (the image then passes qemu-img check and equals its source),
// and an address given beside an activated socket is refused in
// qemu-nbd's words.
func TestSocketActivation(t *testing.T) {
	need(t, "nbdinfo", "nbdcopy", "qemu-img")
	d := t.TempDir()
	img := filepath.Join(d, "a.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	src := filepath.Join(d, "src.raw")
	b := make([]byte, 4<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	qnbd := filepath.Join(bin, "qnbd")
	sh(t, "timeout", "60", "nbdcopy", src, "--", "[", qnbd, "-f", "qcow2", img, "]")
	testkit.QemuCheck(t, img)
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, img)
	size := sh(t, "timeout", "60", "nbdinfo", "--size", "--", "[", qnbd, "-r", "-f", "qcow2", img, "]")
	if strings.TrimSpace(size) != "4194304" {
		t.Errorf("nbdinfo --size: %q", size)
	}
	for _, c := range []struct{ flag, want string }{
		{"--socket=" + filepath.Join(d, "s.sock"), "Unix socket can't be set when using socket activation"},
		{"-p=10810", "TCP port number can't be set when using socket activation"},
		{"-b=127.0.0.1", "The interface can't be set when using socket activation"},
	} {
		_, e, code := testkit.Run(t, "timeout", "60", "nbdinfo", "--size", "--", "[", qnbd, c.flag, "-f", "qcow2", img, "]")
		if code == 0 || !strings.Contains(e, c.want) {
			t.Errorf("activated with %s: exit %d, stderr %q; want %q", c.flag, code, e, c.want)
		}
	}
}
