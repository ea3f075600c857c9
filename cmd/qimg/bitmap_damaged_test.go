package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// damageBitmapTable points the table of the image p's first bitmap at
// off.
func damageBitmapTable(t *testing.T, p string, off uint64) {
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
		es[0].TableOffset = format.HostOff(off)
		format.PutBitmapEntry(dir, es[0])
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
		off         uint64
		qemuRefuses bool
	}{
		{"unaligned", 0x12345, true},
		{"past the end", 1 << 40, false},
	} {
		base := filepath.Join(dir, "base.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", base, "b0")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "--disable", base, "b1")
		damageBitmapTable(t, base, damage.off)
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
				var e string
				var code int
				if tool == "qimg" {
					_, e, code = runQ(t, args...)
				} else {
					_, e, code = testkit.Run(t, "qemu-img", args...)
				}
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
