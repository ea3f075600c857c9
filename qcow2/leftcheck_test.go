package qcow2_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// checkLeft checks the image a test left at path, closed: our Check and
// qemu-img check, both clean (no corruption, no leak). o opens it (its
// passphrase, its opener); secret is the passphrase for qemu-img, if any.
func checkLeft(t *testing.T, path string, o qcow2.Options) {
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
	if len(o.Passphrase) > 0 {
		testkit.QemuCheckSecret(t, path, string(o.Passphrase))
		return
	}
	testkit.QemuCheck(t, path)
}

// checkLeftMem is checkLeft for an image on a memdev: its bytes are
// written to a file first, for qemu-img.
func checkLeftMem(t *testing.T, m *memdev.Dev, o qcow2.Options) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "left.qcow2")
	if err := os.WriteFile(p, m.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Opener = nil
	checkLeft(t, p, o)
}
