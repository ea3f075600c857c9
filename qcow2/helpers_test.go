package qcow2

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

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

// openReadOnly opens the image at path read-only; Cleanup closes it.
func openReadOnly(t testing.TB, path string) *Image {
	t.Helper()
	im, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

// reopenReadOnly closes im and opens its file at path again, read-only
// (openReadOnly), to see what reached the file.
func reopenReadOnly(t testing.TB, im *Image, path string) *Image {
	t.Helper()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return openReadOnly(t, path)
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
	testkit.QemuCheck(t, path)
}

// testImage creates an image file in a testkit.Dir (kept when the test
// fails) and opens it; Cleanup closes it (if the test did not) and checks
// it with Check and qemu-img check.
func testImage(t testing.TB, co CreateOptions, o Options) (*Image, string) {
	t.Helper()
	p := filepath.Join(testkit.Dir(t), "t.qcow2")
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
			testkit.QemuCheck(t, p)
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
