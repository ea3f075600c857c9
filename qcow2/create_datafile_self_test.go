package qcow2

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCreate_DataFileIsImageRefused: a data file that is the image
// itself (the same name, another path to it, a link) is refused before
// anything is written: an existing file keeps its bytes, a new one is
// not made. Create made an image whose data file was itself, which no
// open could lock.
func TestCreate_DataFileIsImageRefused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	for _, df := range []string{p, filepath.Join(dir, ".", "a.qcow2")} {
		err := Create(p, CreateOptions{Size: 1 << 20, DataFile: df})
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("data file %s: %v, want ErrUnsupported", df, err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("data file %s: the image was made (%v)", df, err)
		}
	}
	// A link to the image, neither made yet.
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink("a.qcow2", dangling); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, CreateOptions{Size: 1 << 20, DataFile: dangling}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("data file through a link to the image not made yet: %v, want ErrUnsupported", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("the image was made (%v)", err)
	}
	old := bytes.Repeat([]byte{7}, 4096)
	if err := os.WriteFile(p, old, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, CreateOptions{Size: 1 << 20, DataFile: link}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("data file through a link: %v, want ErrUnsupported", err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, old) {
		t.Error("the refused create changed the existing file")
	}
}

// TestCreate_DataFileThroughLinkedDirectory: "link/.." is the parent of
// the link's target, not the link's own directory: a data file named so
// is the image itself where the kernel says so (refused), and a distinct
// file where it is one (created). The names were cleaned before the
// links were followed, so both went the wrong way.
func TestCreate_DataFileThroughLinkedDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "deep", "inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "deep", "inner"), filepath.Join(dir, "L")); err != nil {
		t.Fatal(err)
	}
	df := filepath.Join(dir, "L") + "/../a.qcow2" // deep/a.qcow2
	if err := Create(filepath.Join(dir, "deep", "a.qcow2"), CreateOptions{Size: 1 << 20, DataFile: df}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("the image itself through L/..: %v, want ErrUnsupported", err)
	}
	if err := Create(filepath.Join(dir, "a.qcow2"), CreateOptions{Size: 1 << 20, DataFile: df}); err != nil {
		t.Errorf("a distinct data file through L/..: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "deep", "a.qcow2")); err != nil {
		t.Errorf("the data file: %v", err)
	}
}
