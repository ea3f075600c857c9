package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// freshImage returns the bytes of a small image with some data written.
func freshImage(t testing.TB, co CreateOptions) []byte {
	t.Helper()
	if co.Size == 0 {
		co.Size = 4 << 20
	}
	d := memdev.New(memdev.Options{})
	if err := CreateDevice(d, co); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(100000, 3), 5000); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return d.Bytes()
}

func TestOpen_Corrupt(t *testing.T) {
	base := freshImage(t, CreateOptions{})
	be := binary.BigEndian
	// Layout of a fresh 64 KiB-cluster image: header 0, reftable 0x10000,
	// refblock 0x20000, L1 0x30000, L2 0x40000, data 0x50000.
	cases := []struct {
		name  string
		edit  func(b []byte) []byte
		field string
		want  error
	}{
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, "magic", ErrNotQcow2},
		{"version 4", func(b []byte) []byte { be.PutUint32(b[4:], 4); return b }, "version", ErrUnsupported},
		{"huge l1_size", func(b []byte) []byte { be.PutUint32(b[36:], 0xffffffff); return b }, "l1_size", ErrUnsupported},
		{"l1 past EOF", func(b []byte) []byte { be.PutUint32(b[36:], 1<<20); return b }, "l1_table_offset", ErrCorrupt},
		{"misaligned l1", func(b []byte) []byte { be.PutUint64(b[40:], 0x30200); return b }, "l1_table_offset", ErrCorrupt},
		{"misaligned reftable", func(b []byte) []byte { be.PutUint64(b[48:], 0x10200); return b }, "refcount_table_offset", ErrCorrupt},
		{"huge reftable", func(b []byte) []byte { be.PutUint32(b[56:], 1<<20); return b }, "refcount_table_clusters", ErrUnsupported},
		{"reftable past EOF", func(b []byte) []byte { be.PutUint32(b[56:], 100); return b }, "refcount_table_offset", ErrCorrupt},
		{"unknown incompatible bit", func(b []byte) []byte { be.PutUint64(b[72:], 1<<9); return b }, "incompatible_features", ErrUnsupported},
		{"L2 offset past EOF", func(b []byte) []byte { be.PutUint64(b[0x30000:], 1<<63|0x7000000); return b }, "l1_entry", ErrCorrupt},
		{"misaligned L2", func(b []byte) []byte { be.PutUint64(b[0x30000:], 1<<63|0x40200); return b }, "l1_entry", ErrCorrupt},
		{"refblock overlaps L1", func(b []byte) []byte { be.PutUint64(b[0x10000:], 0x30000); return b }, "refcount_table_entry", ErrCorrupt},
		{"L2 overlaps reftable", func(b []byte) []byte { be.PutUint64(b[0x30000:], 1<<63|0x10000); return b }, "l1_entry", ErrCorrupt},
		{"L1 overlaps header", func(b []byte) []byte { be.PutUint64(b[40:], 0); return b }, "l1_table_offset", ErrCorrupt},
		{"truncated", func(b []byte) []byte { return b[:50] }, "header_length", ErrCorrupt}, // the rest reads as zeros, as in QEMU,
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(append([]byte(nil), base...))
			_, err := OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{})
			if err == nil {
				t.Fatal("opened a damaged image")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v is not %v", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v does not name field %q", err, tc.field)
			}
		})
	}
}

// A corrupt-marked image opens read-only; Repair opens it writable.
func TestOpen_CorruptBitReadOnly(t *testing.T) {
	b := freshImage(t, CreateOptions{})
	binary.BigEndian.PutUint64(b[72:], format.IncompatCorrupt)
	d := memdev.FromBytes(b, memdev.Options{})
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !im.ReadOnly() {
		t.Fatal("corrupt image opened writable")
	}
	if _, err := im.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to corrupt image: %v", err)
	}
	got := make([]byte, 100000)
	if _, err := im.ReadAt(got, 5000); err != nil || !bytes.Equal(got, pattern(100000, 3)) {
		t.Fatalf("read corrupt image: %v", err)
	}
	im.Close()
	if !bytes.Equal(d.Bytes(), b) {
		t.Fatal("read-only open modified the image")
	}
	// RefuseCorrupt: refused, as QEMU refuses it; read-only still opens.
	if _, err := OpenDevice(d, Options{RefuseCorrupt: true}); !errors.Is(err, ErrMarkedCorrupt) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("writable open with RefuseCorrupt: %v", err)
	}
	im, err = OpenDevice(d, Options{RefuseCorrupt: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	if !bytes.Equal(d.Bytes(), b) {
		t.Fatal("a refused open modified the image")
	}
	im, err = OpenDevice(d, Options{Repair: true, RefuseCorrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || !r.Clean() {
		t.Fatalf("repair: %v %+v", err, r)
	}
	if im.Header().IncompatibleFeatures&format.IncompatCorrupt != 0 {
		t.Fatal("repair left the corrupt bit")
	}
	im.Close()
}

// A damaged L2 entry pointing at metadata must not be written through:
// the image is marked corrupt instead (Q9).
func TestWrite_OverlapMarksCorrupt(t *testing.T) {
	b := freshImage(t, CreateOptions{})
	// guest cluster 0's entry (L2 at 0x40000) now points at the L1 table.
	binary.BigEndian.PutUint64(b[0x40000:], 1<<63|0x30000)
	d := memdev.FromBytes(b, memdev.Options{})
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := append([]byte(nil), d.Bytes()[0x30000:0x40000]...)
	_, err = im.WriteAt([]byte{1, 2, 3}, 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write through overlapping entry: %v", err)
	}
	if !bytes.Equal(d.Bytes()[0x30000:0x40000], before) {
		t.Fatal("L1 table was overwritten")
	}
	if !im.ReadOnly() {
		t.Fatal("image not marked read-only")
	}
	im.Close()
	if binary.BigEndian.Uint64(d.Bytes()[72:])&format.IncompatCorrupt == 0 {
		t.Fatal("corrupt bit not set")
	}
}

// A preallocated zero cluster is written in place, as an overwrite is:
// a hostile entry pointing it at metadata or far past the file marks the
// image corrupt instead of overwriting the metadata or growing the file
// (found by FuzzOpenPatch: a 1 TiB allocation).
func TestWrite_ZeroAllocOverlapMarksCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name string
		host uint64
	}{{"L1 table", 0x30000}, {"past the file", 1 << 40}} {
		t.Run(tc.name, func(t *testing.T) {
			b := freshImage(t, CreateOptions{})
			// guest cluster 1's entry: a zero cluster, allocated at host.
			binary.BigEndian.PutUint64(b[0x40008:], 1<<63|tc.host|format.OflagZero)
			d := memdev.FromBytes(b, memdev.Options{})
			im, err := OpenDevice(d, Options{})
			if err != nil {
				t.Fatal(err)
			}
			before := append([]byte(nil), d.Bytes()...)
			if _, err = im.WriteAt([]byte{1, 2, 3}, 64<<10); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("write through the entry: %v", err)
			}
			after := d.Bytes()
			if len(after) != len(before) || !bytes.Equal(after[0x10000:], before[0x10000:]) {
				t.Fatalf("the write changed the image past its header (%d -> %d bytes)", len(before), len(after))
			}
			im.Close()
		})
	}
}

// Check reports leaks and corruptions like qemu-img, and repairs them.
func TestCheck_LeaksAndRepair(t *testing.T) {
	testkit.NeedQemu(t)
	b := freshImage(t, CreateOptions{})
	be := binary.BigEndian
	// Leak: count cluster 20 (unused, inside the file: past its end
	// neither qemu-img nor Check looks) as used.
	b = append(b, make([]byte, 24*0x10000-len(b))...)
	be.PutUint16(b[0x20000+20*2:], 1)
	p := filepath.Join(testkit.Dir(t), "leak.qcow2")
	os.WriteFile(p, b, 0o644)
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Leaks != 1 || r.Corruptions != 0 {
		t.Fatalf("leak check: %v %+v", err, r)
	}
	im.Close()
	if _, _, code := testkit.Run(t, "qemu-img", "check", p); code != 3 {
		t.Errorf("qemu-img check: exit %d, want 3 (a leak)", code)
	}
	im, _ = Open(p, Options{})
	r, err = im.Check(CheckOptions{Repair: RepairLeaks})
	if err != nil || !r.Clean() || r.LeaksFixed != 1 {
		t.Fatalf("leak repair: %v %+v", err, r)
	}
	closeCheck(t, im, p)

	// Corruption: the data cluster's refcount is 0.
	b = freshImage(t, CreateOptions{})
	be.PutUint16(b[0x20000+5*2:], 0)
	p2 := filepath.Join(testkit.Dir(t), "corrupt.qcow2")
	os.WriteFile(p2, b, 0o644)
	im, err = Open(p2, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err = im.Check(CheckOptions{})
	// cluster 5 has refcount 0 and one reference; COPIED then
	// mismatches too (refcount != 1).
	if err != nil || r.Corruptions < 1 {
		t.Fatalf("corruption check: %v %+v", err, r)
	}
	im.Close()
	im, _ = Open(p2, Options{})
	r, err = im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || !r.Clean() {
		t.Fatalf("repair all: %v %+v %v", err, r, r.Messages)
	}
	closeCheck(t, im, p2)
	_ = block.ErrClosed
}
