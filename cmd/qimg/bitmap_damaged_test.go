package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// damageBitmap changes the directory entry of the image p's first
// bitmap with fn.
func damageBitmap(t *testing.T, p string, fn func(*format.BitmapEntry)) {
	t.Helper()
	raw := mustReadFile(t, p)
	h, err := format.ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range h.Extensions {
		if x.Type != format.ExtBitmaps {
			continue
		}
		ext, err := format.ParseBitmapsExt(x.Data)
		if err != nil {
			t.Fatal(err)
		}
		dir := raw[ext.DirOffset : uint64(ext.DirOffset)+ext.DirSize]
		es, err := format.ParseBitmapDirectory(dir, ext.N)
		if err != nil {
			t.Fatal(err)
		}
		fn(&es[0])
		format.PutBitmapEntry(dir, es[0])
		// PutBitmapEntry writes the table and flags only.
		dir[es[0].At+16] = es[0].Type
		dir[es[0].At+17] = es[0].GranularityBits
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("no bitmaps extension")
}

// qimg bitmap on an image whose bitmap table is damaged fails, as
// qemu-img's does, and changes nothing. Its writable open marked the
// bitmaps stale (clearing their autoclear bit in the header) and then
// found no bitmap to work on. (A table past the end of the file
// qemu-img 7.2 opens: it works on the bitmaps, printing
// "qcow2_free_clusters failed", and exits 0; qimg refuses that too.)
func TestBitmap_DamagedTableLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir() // damaged on purpose: not checked at the end
	for _, damage := range []struct {
		name        string
		fn          func(*format.BitmapEntry)
		qemuRefuses bool
		dirty       bool // lazy refcounts, left dirty: refused before the repair
	}{
		{"unaligned", func(e *format.BitmapEntry) { e.TableOffset = 0x12345 }, true, false},
		{"past the end", func(e *format.BitmapEntry) { e.TableOffset = 1 << 40 }, false, false},
		{"unaligned, dirty", func(e *format.BitmapEntry) { e.TableOffset = 0x12345 }, true, true},
		// The dirty image's repair came first and then marked the
		// bitmaps stale: --add added one, the others gone.
		{"granularity, dirty", func(e *format.BitmapEntry) { e.GranularityBits = 63 }, true, true},
	} {
		base := filepath.Join(dir, "base.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", base, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", base, "b0")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "--disable", base, "b1")
		damageBitmap(t, base, damage.fn)
		if damage.dirty {
			b := mustReadFile(t, base)
			b[79] |= 1 // incompatible_features: dirty
			if err := os.WriteFile(base, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want := mustReadFile(t, base)
		for _, op := range [][]string{
			{"--enable"}, {"--disable"}, {"--clear"}, {"--merge", "b1"},
			{"--remove"}, {"--add"},
		} {
			name := "b0"
			if op[0] == "--add" {
				name = "b2"
			}
			args := append(append([]string{"bitmap"}, op...), base, name)
			tools := []string{"qimg", "qemu-img"}
			if !damage.qemuRefuses {
				tools = tools[:1]
			}
			for _, tool := range tools {
				_, e, code := runImg(t, tool, args...)
				if code != 1 {
					t.Errorf("%s: %s %v: exit %d (%s), want 1", damage.name, tool, op, code, e)
				}
				if !bytes.Equal(mustReadFile(t, base), want) {
					t.Errorf("%s: %s %v changed the image", damage.name, tool, op)
					if err := os.WriteFile(base, want, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}

// Every writable open of an image whose bitmaps cannot be maintained
// fails, as QEMU's does, and changes nothing: it marked the bitmaps
// stale (clearing their autoclear bit), so an io read without -r, a
// write, a resize dropped every bitmap, the sound ones too, without a
// word. Read-only opens still read the data (QEMU refuses them too);
// check reports the bitmap (qemu-img check cannot open the image).
func TestBitmap_DamagedWritableOpensLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir() // damaged on purpose: not checked at the end
	for _, damage := range []struct {
		name string
		fn   func(*format.BitmapEntry)
	}{
		{"type", func(e *format.BitmapEntry) { e.Type = 3 }},
		{"unaligned table", func(e *format.BitmapEntry) { e.TableOffset = 0x12345 }},
		{"table size", func(e *format.BitmapEntry) { e.TableSize++ }},
	} {
		p := filepath.Join(dir, "d.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b1")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x72 0 64k", "-f", "qcow2", p)
		damageBitmap(t, p, damage.fn)
		want := mustReadFile(t, p)
		for _, cmd := range []struct{ qimg, qemu []string }{
			{[]string{"io", "-c", "write -P 1 0 4k", p}, []string{"qemu-io", "-c", "write -P 1 0 4k", p}},
			{[]string{"io", "-c", "read 0 4k", p}, []string{"qemu-io", "-c", "read 0 4k", p}},
			{[]string{"resize", p, "8M"}, []string{"qemu-img", "resize", p, "8M"}},
			{[]string{"snapshot", "-c", "s", p}, []string{"qemu-img", "snapshot", "-c", "s", p}},
			{[]string{"amend", "-o", "lazy_refcounts=on", p}, []string{"qemu-img", "amend", "-o", "lazy_refcounts=on", p}},
		} {
			_, qe, qcode := testkit.Run(t, cmd.qemu[0], cmd.qemu[1:]...)
			if qcode == 0 || !bytes.Equal(mustReadFile(t, p), want) {
				t.Fatalf("%s: %v: exit %d (%s): QEMU works on it, the test proves nothing", damage.name, cmd.qemu, qcode, qe)
			}
			_, e, code := runQ(t, cmd.qimg...)
			if code != 1 {
				t.Errorf("%s: qimg %v: exit %d (%s), want 1 (qemu: %s)", damage.name, cmd.qimg, code, e, qe)
			}
			if !bytes.Equal(mustReadFile(t, p), want) {
				t.Errorf("%s: qimg %v changed the image", damage.name, cmd.qimg)
				if err := os.WriteFile(p, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if out, e, code := runQ(t, "io", "-r", "-c", "read -P 0x72 0 64k", p); code != 0 {
			t.Errorf("%s: a read-only read failed: exit %d: %s%s", damage.name, code, out, e)
		}
		// qemu-img check cannot open it (exit 1); qimg's finds it corrupt.
		if out, e, code := runQ(t, "check", p); code != 2 || !strings.Contains(e, "ERROR bitmaps") {
			t.Errorf("%s: check: exit %d, want 2 and the bitmap named:\n%s%s", damage.name, code, out, e)
		}
	}
}

// A bitmap cluster whose refcount is 0 (a damaged image QEMU opens: it
// does not look at the refcounts there): a writable open is refused,
// changing nothing and naming the repair, rather than dropping the
// bitmaps or handing the cluster to guest data; check -r all repairs
// it, and then the image is written with its bitmaps kept.
func TestBitmap_FreeClusterRefusedUntilRepaired(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "f.qcow2") // damaged on purpose
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", p)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b1")
	var table uint64
	damageBitmap(t, p, func(e *format.BitmapEntry) { table = uint64(e.TableOffset) })
	damage(t, p, func(f imageFile) {
		rb := int64(f.u64(int64(f.u64(48)))) // the first refcount block
		f.write(rb+int64(table>>16)*2, []byte{0, 0})
	})
	want := mustReadFile(t, p)
	_, e, code := runQ(t, "io", "-c", "write -P 2 2M 64k", p)
	if code != 1 || !strings.Contains(e, "check -r all") {
		t.Fatalf("io: exit %d (%s), want 1 and the repair named", code, e)
	}
	if !bytes.Equal(mustReadFile(t, p), want) {
		t.Fatal("the refused open changed the image")
	}
	mustQ(t, "check", "-r", "all", p)
	mustQ(t, "io", "-c", "write -P 2 2M 64k", p)
	testkit.QemuCheck(t, p)
	if info := testkit.MustRun(t, "qemu-img", "info", p); strings.Count(info, "name: b") != 2 || strings.Contains(info, "in-use") {
		t.Fatalf("bitmaps after the repair and the write:\n%s", info)
	}
}
