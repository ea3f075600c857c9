package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// LoadSnapshotTemp refuses an image opened for repair, even while its
// damage keeps it read-only: a repair's refcount rebuild would take the
// snapshot's L1 table for the active one (the active layer's clusters
// freed, the snapshot's entries written over the active L1) and then make
// the image writable. A read-only open reads the snapshot and leaves the
// file as it was.
func TestLoadSnapshotTemp_RefusesRepairOpen(t *testing.T) {
	be := binary.BigEndian
	d := memdev.New(memdev.Options{})
	if err := CreateDevice(d, CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4096, 1), 1<<20)
	if _, err := im.CreateSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4096, 2), 1<<20)
	mustWrite(t, im, pattern(4096, 3), 40<<20)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := d.Bytes()
	rt := be.Uint64(b[48:])
	be.PutUint64(b[rt:], be.Uint64(b[rt:])|8) // reserved bits: the refcounts need a rebuild

	orig := append([]byte(nil), b...)
	ro := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
	im, err = OpenDevice(ro, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.LoadSnapshotTemp("", "s1"); err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	got := make([]byte, 4096)
	if _, err := im.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, pattern(4096, 1)) {
		t.Fatalf("read of the snapshot: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ro.Bytes(), orig) {
		t.Fatal("LoadSnapshotTemp changed a read-only image's file")
	}

	rd := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
	im, err = OpenDevice(rd, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if !im.ReadOnly() {
		t.Fatal("the damaged image opened writable")
	}
	if err := im.LoadSnapshotTemp("", "s1"); err == nil {
		// What the refusal prevents: the repair takes the snapshot's L1
		// for the active one.
		im.Check(CheckOptions{Repair: RepairAll})
		im.Close()
		im, err := OpenDevice(rd, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("LoadSnapshotTemp accepted an image opened for repair; after a repair, it opens with %v", err)
		}
		defer im.Close()
		r, err := im.Check(CheckOptions{})
		t.Fatalf("LoadSnapshotTemp accepted an image opened for repair; after a repair, check finds: %v %v", err, r.Messages)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rd.Bytes(), orig) {
		t.Fatal("a refused LoadSnapshotTemp changed the file")
	}
}

// After LoadSnapshotTemp, Check refuses instead of reporting the
// snapshot's references as the active layer's (false corruption).
func TestLoadSnapshotTemp_CheckRefuses(t *testing.T) {
	d := memdev.New(memdev.Options{})
	if err := CreateDevice(d, CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4096, 1), 0)
	if _, err := im.CreateSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4096, 2), 0) // the active layer copies the cluster
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im, err = OpenDevice(d, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if r, err := im.Check(CheckOptions{}); err != nil || r.Corruptions != 0 {
		t.Fatalf("check before the load: %v %+v", err, r)
	}
	if err := im.LoadSnapshotTemp("", "s1"); err != nil {
		t.Fatal(err)
	}
	if r, err := im.Check(CheckOptions{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("check after LoadSnapshotTemp: %v %+v, want ErrUnsupported", err, r)
	}
}
