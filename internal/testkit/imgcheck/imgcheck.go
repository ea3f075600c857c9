// Package imgcheck checks the qcow2 images tests leave behind, with our
// Check and with qemu-img check: both must find them clean (no
// corruption, no leak). It is for test packages outside qcow2 itself
// (qcow2's own tests cannot import it: it imports qcow2).
package imgcheck

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// File checks the closed image at path. o opens it (its opener, its
// passphrase; it is opened read-only); a passphrase is also given to
// qemu-img.
func File(t testing.TB, path string, o qcow2.Options) {
	t.Helper()
	o.ReadOnly = true
	im, err := qcow2.Open(path, o)
	if err != nil {
		t.Fatalf("reopening %s to check it: %v", path, err)
	}
	r, err := im.Check(qcow2.CheckOptions{})
	im.Close()
	if err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	if !r.Clean() {
		t.Errorf("check %s: %d corruptions, %d leaks, %d check errors: %v", path, r.Corruptions, r.Leaks, r.CheckErrors, r.Messages)
	}
	if o.Passphrase != nil {
		testkit.QemuCheckSecret(t, path, string(o.Passphrase))
		return
	}
	testkit.QemuCheck(t, path)
}

// Mem is File for an image on a memdev, closed: its bytes are written to
// a file first, for qemu-img.
func Mem(t testing.TB, m *memdev.Dev, o qcow2.Options) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "left.qcow2")
	if err := os.WriteFile(p, m.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Opener = nil
	File(t, p, o)
}
