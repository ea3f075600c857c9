package qcow2

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestSmoke(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{0x5a}, 70000)
	if _, err := im.WriteAt(buf, 1000); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 70000)
	if _, err := im.ReadAt(got, 1000); err != nil || !bytes.Equal(got, buf) {
		t.Fatal("mismatch", err)
	}
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d %d %d", r.Corruptions, r.Leaks, r.AllocatedClusters)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "check", p).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("qemu-io", "-c", "read -P 0x5a 1000 70000", "-c", "read -P 0 0 1000", p).CombinedOutput()
	t.Logf("%s", out)
	if err != nil || bytes.Contains(out, []byte("fail")) {
		t.Fatal(err)
	}
}
