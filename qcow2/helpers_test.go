package qcow2

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
)

func haveQemu() bool {
	_, err1 := exec.LookPath("qemu-img")
	_, err2 := exec.LookPath("qemu-io")
	return err1 == nil && err2 == nil
}

func needQemu(t testing.TB) {
	t.Helper()
	if !haveQemu() {
		t.Skip("qemu-img/qemu-io not installed")
	}
}

func qemu(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	if name == "qemu-io" && bytes.Contains(out, []byte("Pattern verification failed")) {
		t.Fatalf("%s %v: %s", name, args, out)
	}
	return string(out)
}

// qemuCheck runs qemu-img check and fails on any error or leak.
func qemuCheck(t testing.TB, path string) {
	t.Helper()
	if !haveQemu() {
		return
	}
	out, err := exec.Command("qemu-img", "check", "--output=json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
	var r struct {
		Corruptions int `json:"corruptions"`
		Leaks       int `json:"leaks"`
		CheckErrors int `json:"check-errors"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("qemu-img check json: %v\n%s", err, out)
	}
	if r.Corruptions+r.Leaks+r.CheckErrors != 0 {
		human, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
		t.Fatalf("qemu-img check %s: %+v\n%s", path, r, human)
	}
}

// ownCheck opens path read-only and runs our Check.
func ownCheck(t testing.TB, path string) {
	t.Helper()
	im, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen %s: %v", path, err)
	}
	defer im.Close()
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	if !r.Clean() {
		t.Fatalf("check %s: %d corruptions, %d leaks, %d errors: %v", path, r.Corruptions, r.Leaks, r.CheckErrors, head(r.Messages, 10))
	}
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// closeCheck closes im and runs our Check and qemu-img check on the file.
func closeCheck(t testing.TB, im *Image, path string) {
	t.Helper()
	if err := im.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	ownCheck(t, path)
	qemuCheck(t, path)
}

// testImage creates an image file and opens it; Cleanup closes it (if the
// test did not) and checks it with Check and qemu-img check.
func testImage(t testing.TB, co CreateOptions, o Options) (*Image, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.qcow2")
	if err := Create(p, co); err != nil {
		t.Fatalf("create: %v", err)
	}
	im, err := Open(p, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := im.Close(); err != nil && err != block.ErrClosed {
			t.Errorf("close: %v", err)
		}
		if !t.Failed() {
			ownCheck(t, p)
			qemuCheck(t, p)
		}
	})
	return im, p
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
	return b
}

// readAll reads the whole virtual disk.
func readAll(t testing.TB, d block.Device) []byte {
	t.Helper()
	n, err := d.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if err := block.ReadAt(d, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func mustEqual(t testing.TB, got, want []byte, what string) {
	t.Helper()
	if i := firstDiff(got, want); i >= 0 {
		g, w := byte(0), byte(0)
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		t.Fatalf("%s: first difference at offset %d (0x%x): got %#x want %#x (len %d vs %d)", what, i, i, g, w, len(got), len(want))
	}
}
