package qcow2

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TruncatePrealloc grows the image with every cluster of the new range
// allocated (qemu-img resize --preallocation=metadata|falloc|full), the
// range reading as zeros and the old data kept, clusters freed before it
// (stale bytes, no punch) included; a size that does not grow and an
// image with a backing file are refused, and nothing changes.
func TestTruncatePrealloc(t *testing.T) {
	for _, mode := range []string{PreallocMetadata, PreallocFalloc, PreallocFull} {
		t.Run(mode, func(t *testing.T) {
			const cs = 4096
			im, _ := testImage(t, CreateOptions{Size: 1000448, ClusterSize: cs}, Options{NoPassDiscard: true})
			old := pattern(1000448, 3)
			if _, err := im.WriteAt(old, 0); err != nil {
				t.Fatal(err)
			}
			// Freed clusters below the high-water mark, their bytes left.
			if err := im.Discard(0, 512<<10); err != nil {
				t.Fatal(err)
			}
			copy(old, make([]byte, 512<<10))
			if err := im.TruncatePrealloc(1000448, mode); err == nil {
				t.Fatal("a size that does not grow: no error")
			}
			const size = 3072000
			if err := im.TruncatePrealloc(size, mode); err != nil {
				t.Fatal(err)
			}
			if n, _ := im.Size(); n != size {
				t.Fatalf("size %d, want %d", n, size)
			}
			if got := readBack(t, im, 0, len(old)); !bytes.Equal(got, old) {
				t.Fatal("the old data changed")
			}
			if got := readBack(t, im, int64(len(old)), size-len(old)); !bytes.Equal(got, make([]byte, len(got))) {
				t.Fatal("the new range does not read as zeros")
			}
			r, err := im.Check(CheckOptions{})
			if err != nil || !r.Clean() {
				t.Fatalf("check: %v %+v", err, r)
			}
			// Every cluster but the 128 discarded ones.
			if want := int64((size+cs-1)/cs - (512<<10)/cs); r.AllocatedClusters != want {
				t.Fatalf("%d clusters allocated, want %d", r.AllocatedClusters, want)
			}
		})
	}
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "b.qcow2"), "4M")
	top := filepath.Join(dir, "t.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", top)
	im, err := Open(top, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.TruncatePrealloc(8<<20, PreallocFalloc); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("over a backing file: %v, want ErrUnsupported", err)
	}
	if n, _ := im.Size(); n != 4<<20 {
		t.Fatalf("size %d after a refusal", n)
	}
}
