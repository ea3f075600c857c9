package qcow2

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// An L2 entry that QEMU's lookups take for proof of damage (a host
// offset that is not cluster aligned, an invalid subcluster bitmap)
// marks the image corrupt when a read, a write, a zeroing or a block
// status meets it, as qemu-io's reads and writes do on the same file
// (signal.go, Q9); before, the operation failed and the image stayed
// writable and unmarked.
func TestSignal_FatalEntryMarksCorruptLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	damages := []struct {
		name string
		xl2  bool
		edit func(b []byte, l2 uint64)
	}{
		{"unaligned offset", false, func(b []byte, l2 uint64) {
			e := binary.BigEndian.Uint64(b[l2:])
			binary.BigEndian.PutUint64(b[l2:], e+512)
		}},
		{"xl2 unaligned offset", true, func(b []byte, l2 uint64) {
			e := binary.BigEndian.Uint64(b[l2:])
			binary.BigEndian.PutUint64(b[l2:], e+512)
		}},
		{"xl2 allocated and zero", true, func(b []byte, l2 uint64) {
			bm := binary.BigEndian.Uint64(b[l2+8:])
			binary.BigEndian.PutUint64(b[l2+8:], bm|1<<32)
		}},
		{"xl2 allocated in an unallocated cluster", true, func(b []byte, l2 uint64) {
			binary.BigEndian.PutUint64(b[l2:], 0)
		}},
	}
	ops := []struct {
		name string
		qemu string // qemu-io command, "" where qemu-io has none that looks the entry up
		do   func(im *Image) error
	}{
		{"read", "read 0 4k", func(im *Image) error { _, err := im.ReadAt(make([]byte, 4096), 0); return err }},
		{"write", "write 0 4k", func(im *Image) error { _, err := im.WriteAt(make([]byte, 4096), 0); return err }},
		{"zero", "write -z 0 4k", func(im *Image) error { return im.WriteZeroes(0, 4096, 0) }},
		{"status", "", func(im *Image) error { _, err := im.BlockStatus(0, 4096); return err }},
	}
	dir := t.TempDir()
	for _, d := range damages {
		base := filepath.Join(dir, "base.qcow2")
		opts := "cluster_size=65536"
		if d.xl2 {
			opts += ",extended_l2=on"
		}
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, base, "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-f", "qcow2", base)
		b, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		l1 := binary.BigEndian.Uint64(b[40:])
		l2 := binary.BigEndian.Uint64(b[l1:]) & uint64(format.L1OffsetMask)
		d.edit(b, l2)
		for _, op := range ops {
			t.Run(d.name+"/"+op.name, func(t *testing.T) {
				if op.qemu != "" {
					q := filepath.Join(dir, "qemu.qcow2")
					if err := os.WriteFile(q, b, 0o644); err != nil {
						t.Fatal(err)
					}
					testkit.Run(t, "qemu-io", "-c", op.qemu, "-f", "qcow2", q)
					// QEMU's subcluster zeroing sets the bitmap
					// without looking at the entry: it does not
					// signal, and we refuse and mark anyway (the
					// entry is damaged; what a write means there is
					// a guess).
					if want := !(d.xl2 && op.name == "zero"); corruptBit(t, q) != want {
						t.Fatalf("qemu-io %s: corrupt bit %v, want %v", op.qemu, !want, want)
					}
				}
				p := filepath.Join(dir, "ours.qcow2")
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				im, err := Open(p, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := op.do(im); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s through the damaged entry: %v, want ErrCorrupt", op.name, err)
				}
				if !im.ReadOnly() {
					t.Error("image still writable")
				}
				if _, err := im.WriteAt([]byte{1}, 1<<20); !errors.Is(err, ErrReadOnly) {
					t.Errorf("write elsewhere after the damage was met: %v", err)
				}
				if err := im.Close(); !errors.Is(err, ErrCorrupt) {
					t.Errorf("Close: %v", err)
				}
				if !corruptBit(t, p) {
					t.Fatal("corrupt bit not set")
				}
			})
		}
	}
}

// A read-only image meets the damage without writing anything: the read
// fails and the file is unchanged (qemu-img map's non-fatal report).
func TestSignal_ReadOnlyWritesNothing(t *testing.T) {
	b := freshImage(t, CreateOptions{})
	// guest cluster 0's entry (L2 at 0x40000), half a sector off.
	e := binary.BigEndian.Uint64(b[0x40000:])
	binary.BigEndian.PutUint64(b[0x40000:], e+512)
	p := filepath.Join(t.TempDir(), "ro.qcow2")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read: %v", err)
	}
	if _, err := im.BlockStatus(0, 512); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block status: %v", err)
	}
	im.Close()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, b, "read-only image")
}

func corruptBit(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [80]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint64(h[72:])&format.IncompatCorrupt != 0
}
