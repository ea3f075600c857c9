package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// staleBitmapsImage is an image with one bitmap whose autoclear bit was
// cleared afterwards, as by a program lacking bitmap support.
func staleBitmapsImage(t *testing.T) []byte {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.AddBitmap("b0", 65536, true); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), mem.Bytes()...)
	ac := binary.BigEndian.Uint64(b[88:])
	if ac&format.AutoclearBitmaps == 0 {
		t.Fatal("no bitmaps autoclear bit after AddBitmap")
	}
	binary.BigEndian.PutUint64(b[88:], ac&^format.AutoclearBitmaps)
	return b
}

// hasBitmapsExt reports whether the header in b holds a bitmaps extension.
func hasBitmapsExt(t *testing.T, b []byte) bool {
	t.Helper()
	h, err := format.ParseHeader(b[:min(len(b), 65536)])
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h.Extensions {
		if e.Type == format.ExtBitmaps {
			return true
		}
	}
	return false
}

// TestBitmapAutoclear_OpenWarns: every open of an image whose bitmaps
// extension has its autoclear bit clear reports QEMU's warning once
// (Options.Warn); a read-only open leaves the file as it is; a writable
// one (for repair too) drops the extension, as QEMU's does, leaving the
// bitmaps' clusters leaked and the bit clear.
func TestBitmapAutoclear_OpenWarns(t *testing.T) {
	for _, mode := range []string{"ro", "rw", "repair"} {
		t.Run(mode, func(t *testing.T) {
			b := staleBitmapsImage(t)
			d := memdev.FromBytes(b, memdev.Options{})
			var got []OpenWarning
			im, err := OpenDevice(d, Options{NoBacking: true, ReadOnly: mode == "ro", Repair: mode == "repair",
				Warn: func(w OpenWarning) { got = append(got, w) }})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Message != StaleBitmapsWarning || got[0].Hint != StaleBitmapsHint {
				t.Fatalf("warnings %+v, want one %q", got, StaleBitmapsWarning)
			}
			if len(im.Bitmaps()) != 0 {
				t.Errorf("stale bitmaps listed: %+v", im.Bitmaps())
			}
			r, err := im.Check(CheckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Leaks != 2 || r.Corruptions != 0 {
				t.Errorf("check: %d leaks, %d corruptions; want 2 leaks (the directory and the table), as qemu-img check", r.Leaks, r.Corruptions)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			after := d.Bytes()
			if want := mode == "ro"; hasBitmapsExt(t, after) != want {
				t.Errorf("bitmaps extension after the open: %v, want %v", !want, want)
			}
			if binary.BigEndian.Uint64(after[88:])&format.AutoclearBitmaps != 0 {
				t.Error("autoclear bit set after the open")
			}
			// The next open warns only while the extension stays.
			got = nil
			im, err = OpenDevice(memdev.FromBytes(append([]byte(nil), after...), memdev.Options{}),
				Options{NoBacking: true, ReadOnly: true, Warn: func(w OpenWarning) { got = append(got, w) }})
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			if (len(got) == 1) != (mode == "ro") || len(got) > 1 {
				t.Errorf("reopen after %s: warnings %+v", mode, got)
			}
		})
	}
}

// TestBitmapAutoclear_NoWarningWhenValid: bitmaps whose autoclear bit
// is set give no warning.
func TestBitmapAutoclear_NoWarningWhenValid(t *testing.T) {
	b := staleBitmapsImage(t)
	binary.BigEndian.PutUint64(b[88:], binary.BigEndian.Uint64(b[88:])|format.AutoclearBitmaps)
	im, err := OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{NoBacking: true, ReadOnly: true,
		Warn: func(w OpenWarning) { t.Errorf("warning %+v", w) }})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if len(im.Bitmaps()) != 1 {
		t.Errorf("bitmaps %+v, want b0", im.Bitmaps())
	}
}

// TestBitmapAutoclear_BackingWarns: the open of a backing file warns
// too (QEMU's open of the chain), and leaves it as it is (read-only).
func TestBitmapAutoclear_BackingWarns(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	if err := os.WriteFile(base, staleBitmapsImage(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Create(top, CreateOptions{BackingFile: "base.qcow2", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	var got []OpenWarning
	im, err := Open(top, Options{Warn: func(w OpenWarning) { got = append(got, w) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Message != StaleBitmapsWarning || got[0].Path != base {
		t.Errorf("warnings %+v, want one for %s", got, base)
	}
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	if !hasBitmapsExt(t, b) {
		t.Error("the backing file's bitmaps extension went: it is opened read-only")
	}
}

// TestBitmapAutoclear_V2Warns: a version 2 image (no autoclear bits)
// with a bitmaps extension gets QEMU's version 2 warning, and a
// writable open drops the extension.
func TestBitmapAutoclear_V2Warns(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, Compat: "0.10"}); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), mem.Bytes()...)
	be := binary.BigEndian
	ext := make([]byte, 8+24+8)
	be.PutUint32(ext, format.ExtBitmaps)
	be.PutUint32(ext[4:], 24)
	be.PutUint32(ext[8:], 1) // nb_bitmaps
	copy(b[72:], ext)        // after the version 2 header, then the end marker
	for _, ro := range []bool{true, false} {
		d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
		var got []OpenWarning
		im, err := OpenDevice(d, Options{NoBacking: true, ReadOnly: ro, Warn: func(w OpenWarning) { got = append(got, w) }})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Message != StaleBitmapsWarningV2 || got[0].Hint != StaleBitmapsHint {
			t.Errorf("read-only %v: warnings %+v, want the version 2 one", ro, got)
		}
		if hasBitmapsExt(t, d.Bytes()) != ro {
			t.Errorf("read-only %v: extension kept %v", ro, !ro)
		}
	}
}
