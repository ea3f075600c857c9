package qcow2

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreateNegativeSize: Create refuses a negative size, as it
// refuses one of -512 or less. It rounded the size up to a sector before
// checking it, so -1 to -511 became 0: a library caller's bad size made
// an empty disk (or, with a backing file, one of the backing file's
// size) instead of an error. A size near the int64 limit overflowed the
// rounding and was refused as a negative one.
func TestCreateNegativeSize(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if err := Create(base, CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, co := range []CreateOptions{
		{Size: -1},
		{Size: -511},
		{Size: -1, BackingFile: "base.qcow2", BackingFormat: "qcow2"},
	} {
		p := filepath.Join(dir, "x.qcow2")
		os.Remove(p)
		err := Create(p, co)
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("Create(Size %d, backing %q) = %v, want ErrUnsupported", co.Size, co.BackingFile, err)
		}
		if _, serr := os.Stat(p); serr == nil {
			t.Errorf("Create(Size %d) left a file", co.Size)
		}
	}
	err := Create(filepath.Join(dir, "y.qcow2"), CreateOptions{Size: 1<<63 - 1})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Create(MaxInt64) = %v, want ErrUnsupported", err)
	}
	if want := "size 9223372036854775807"; !strings.Contains(err.Error(), want) {
		t.Errorf("Create(MaxInt64) = %v, want it to name %s", err, want)
	}
	// The rounding itself is unchanged.
	p := filepath.Join(dir, "z.qcow2")
	if err := Create(p, CreateOptions{Size: 1000}); err != nil {
		t.Fatal(err)
	}
	im := openReadOnly(t, p)
	if n, _ := im.Size(); n != 1024 {
		t.Errorf("Size 1000 made a disk of %d bytes, want 1024", n)
	}
}
