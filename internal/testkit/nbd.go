package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
	out, _, code := Run(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+name, "nbd+unix:///?socket="+sock)
	if code != 0 {
		t.Fatalf("nbdinfo of bitmap %s of %s: exit %d (%s)", name, path, code, stderr.String())
	}
	return out
}
