package qcow2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring"
)

// The library locks images itself (not only the CLIs): a second writer,
// a reader without force-share, and Create over the open image are all
// refused, and the image is left as it was; with uring's files and with
// the default opener's block.OSFile (which took no locks: a second
// writer and a Create over an open image went through and corrupted it).
func TestLock_OpenAndCreate(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   Opener
	}{{"uring", uring.Opener(uring.Options{Backend: uring.Threads})}, {"default", nil}} {
		t.Run(tc.name, func(t *testing.T) { testLockOpenAndCreate(t, tc.op) })
	}
}

func testLockOpenAndCreate(t *testing.T, op Opener) {
	d := testkit.Dir(t)
	p := filepath.Join(d, "a.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 20, Opener: op}); err != nil {
		t.Fatal(err)
	}
	w, err := Open(p, Options{Opener: op})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if err := w.Writev(0, [][]byte{data}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var le *LockError
	if _, err := Open(p, Options{Opener: op}); !errors.As(err, &le) || !errors.Is(err, block.ErrLocked) {
		t.Fatalf("second writer: %v", err)
	}
	if _, err := Open(p, Options{Opener: op, ReadOnly: true}); !errors.Is(err, block.ErrLocked) {
		t.Fatalf("reader without force-share: %v", err)
	}
	if _, err := Open(p, Options{Opener: op, ForceShare: true}); !errors.Is(err, ErrForceShareWritable) {
		t.Fatalf("force-share writer: %v", err)
	}
	r, err := Open(p, Options{Opener: op, ReadOnly: true, ForceShare: true})
	if err != nil {
		t.Fatalf("force-share reader: %v", err)
	}
	r.Close()
	// An overlay of the image in use takes its size from it, reading
	// it shared, as QEMU's bdrv_img_create (a live snapshot; refused
	// before).
	ov := filepath.Join(d, "ov.qcow2")
	if err := Create(ov, CreateOptions{BackingFile: p, BackingFormat: "qcow2", Opener: op}); err != nil {
		t.Fatalf("overlay of an image in use: %v", err)
	}
	before, _ := os.ReadFile(p)
	if err := Create(p, CreateOptions{Size: 2 << 20, Opener: op}); !errors.Is(err, block.ErrLocked) {
		t.Fatalf("Create over an open image: %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("a refused Create changed the image")
	}
	// Opting out takes no locks (and so sees none).
	r, err = Open(p, Options{Opener: op, ReadOnly: true, NoLock: true})
	if err != nil {
		t.Fatalf("NoLock reader: %v", err)
	}
	r.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err = Open(p, Options{Opener: op, ReadOnly: true})
	if err != nil {
		t.Fatalf("reader after close: %v", err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, r)[:4096], data, "data after the refusals")
	r.Close()
	ownCheck(t, p)
	testkit.QemuCheck(t, p)
	// QEMU sees the locks, and they see QEMU's.
	if testkit.HaveQemu() {
		w, err := Open(p, Options{Opener: op})
		if err != nil {
			t.Fatal(err)
		}
		if _, e, code := testkit.Run(t, "qemu-io", "-r", "-c", "read 0 4k", p); code == 0 || !strings.Contains(e, `Failed to get shared "write" lock`) {
			t.Errorf("qemu-io beside our writer: exit %d, %s", code, e)
		}
		w.Close()
		q := exec.Command("qemu-io", "-c", "sleep 100000", p)
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { q.Process.Kill(); q.Wait() }()
		testkit.WaitLockByte(t, p, block.LockPermBase+1) // qemu-io's write permission
		if _, err := Open(p, Options{Opener: op}); !errors.Is(err, block.ErrLocked) {
			t.Fatalf("writer beside qemu-io: %v", err)
		}
		if _, err := Open(p, Options{Opener: op, ReadOnly: true}); !errors.Is(err, block.ErrLocked) {
			t.Fatalf("reader beside qemu-io: %v", err)
		}
		if err := Create(p, CreateOptions{Size: 1 << 20, Opener: op}); !errors.Is(err, block.ErrLocked) {
			t.Fatalf("Create beside qemu-io: %v", err)
		}
	}
}

// TestCreate_TooLargeLeavesImage: a Create refused for a size the
// cluster size cannot map leaves an existing image as it was (it was
// emptied first, and the refusal came after).
func TestCreate_TooLargeLeavesImage(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "a.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	if err := Create(p, CreateOptions{Size: 1 << 62}); !errors.Is(err, ErrSizeTooLarge) {
		t.Fatalf("Create of 4 EiB: %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("a refused Create changed the image")
	}
	ownCheck(t, p)
}

// Sizes round up to whole sectors, as qemu-img rounds them.
func TestCreate_RoundsSize(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "b.qcow2")
	if err := Create(p, CreateOptions{Size: 1000}); err != nil {
		t.Fatal(err)
	}
	im := openReadOnly(t, p)
	if n, _ := im.Size(); n != 1024 {
		t.Fatalf("size %d, want 1024", n)
	}
	ownCheck(t, p)
	testkit.QemuCheck(t, p)
}
