package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// convert --bitmaps against qemu-img's: the same bitmaps (names, flags,
// granularity, dirty maps through qemu-nbd) in the output, the same
// refusals of an inconsistent bitmap, a raw output and a name the
// output has already, and --skip-broken-bitmaps' warning.
func TestConvert_BitmapsLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	t.Parallel()
	dir := qemuDir(t)
	src := filepath.Join(dir, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "16M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", src, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4k", "--disable", src, "b1")
	testkit.MustRun(t, "qemu-io", "-c", "write 1M 4k", "-c", "write 9M 100k", "-f", "qcow2", src)
	testkit.MustRun(t, "qemu-img", "bitmap", "--disable", "--merge", "b0", src, "b1")
	// broken: b0 in use, as a crash leaves it (a copy taken while qimg io
	// holds the image open).
	broken := filepath.Join(dir, "broken.qcow2")
	testkit.MustRun(t, "cp", src, broken)
	if _, _, code := runQ(t, "io", "-c", "write 2M 4k", broken); code != 0 {
		t.Fatal("qimg io failed")
	}
	markInUse(t, broken, "b0")
	// Sources that cannot have bitmaps (qimg converted them, without).
	v2, raw := filepath.Join(dir, "v2.qcow2"), filepath.Join(dir, "src.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "4M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	cases := []struct {
		name string
		args []string // OUT is the output
		pre  bool     // the output exists (converted before)
		v2   bool     // the output exists, an empty version 2 image
	}{
		{"copy", []string{"--bitmaps", "-O", "qcow2", src, "OUT"}, false, false},
		{"inconsistent", []string{"--bitmaps", "-O", "qcow2", broken, "OUT"}, false, false},
		{"skip broken", []string{"--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", broken, "OUT"}, false, false},
		{"raw", []string{"--bitmaps", "-O", "raw", src, "OUT"}, false, false},
		{"skip alone", []string{"--skip-broken-bitmaps", "-O", "qcow2", src, "OUT"}, false, false},
		{"existing names", []string{"--bitmaps", "-n", "-O", "qcow2", src, "OUT"}, true, false},
		{"v2 source", []string{"--bitmaps", "-O", "qcow2", v2, "OUT"}, false, false},
		{"v2 source to raw", []string{"--bitmaps", "-O", "raw", v2, "OUT"}, false, false},
		{"raw source", []string{"--bitmaps", "-f", "raw", "-O", "qcow2", raw, "OUT"}, false, false},
		// A version 2 output cannot store bitmaps: refused before
		// anything is copied (qimg copied the data, then failed).
		{"v2 output", []string{"--bitmaps", "-O", "qcow2", "-o", "compat=0.10", src, "OUT"}, false, false},
		{"v2 output -n", []string{"--bitmaps", "-n", "-O", "qcow2", src, "OUT"}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outs := [2]string{filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")}
			args := func(k int) []string {
				a := []string{"convert"}
				for _, s := range c.args {
					if s == "OUT" {
						s = outs[k]
					}
					a = append(a, s)
				}
				return a
			}
			for _, p := range outs {
				os.Remove(p)
				if c.pre {
					testkit.MustRun(t, "qemu-img", "convert", "--bitmaps", "-O", "qcow2", src, p)
				}
				if c.v2 {
					testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", p, "16M")
				}
			}
			_, qe, qcode := testkit.Run(t, "qemu-img", args(0)...)
			_, oe, ocode := runQ(t, args(1)...)
			qm := strings.ReplaceAll(strings.TrimSpace(strings.ReplaceAll(qe, "qemu-img: ", "")), "\n", "; ")
			om := strings.TrimSpace(strings.ReplaceAll(oe, "qimg: convert: ", ""))
			if qcode != ocode || qm != om {
				t.Fatalf("qemu-img exit %d %q\nqimg     exit %d %q", qcode, qm, ocode, om)
			}
			if qcode != 0 {
				if c.v2 {
					if a, b := testkit.MustRun(t, "qemu-img", "map", outs[0]), testkit.MustRun(t, "qemu-img", "map", outs[1]); a != strings.ReplaceAll(b, outs[1], outs[0]) {
						t.Errorf("the refused output's map:\nqemu-img's:\n%s\nqimg's:\n%s", a, b)
					}
				}
				return
			}
			testkit.QemuCheck(t, outs[1])
			if a, b := qemuBitmapsOf(t, outs[0]), qemuBitmapsOf(t, outs[1]); a != b {
				t.Fatalf("bitmaps:\nqemu-img's: %s\nqimg's:     %s", a, b)
			}
			for _, n := range []string{"b0", "b1"} {
				if !strings.Contains(qemuBitmapsOf(t, outs[0]), "name: "+n) {
					continue
				}
				if a, b := testkit.DirtyMap(t, outs[0], n), testkit.DirtyMap(t, outs[1], n); a != b {
					t.Errorf("bitmap %s:\nqemu-img's:\n%s\nqimg's:\n%s", n, a, b)
				}
			}
		})
	}
}

// qemuBitmapsOf is the bitmaps part of qemu-img info.
func qemuBitmapsOf(t *testing.T, p string) string {
	t.Helper()
	info := testkit.MustRun(t, "qemu-img", "info", p)
	_, after, _ := strings.Cut(info, "bitmaps:")
	before, _, _ := strings.Cut(after, "refcount bits")
	return before
}

// markInUse sets IN_USE on bitmap name of the qcow2 image at p, as a
// crash while a program held the image open leaves it.
func markInUse(t *testing.T, p, name string) {
	t.Helper()
	damage(t, p, func(f imageFile) {
		hl := int64(f.u32(100))
		for off := hl; ; {
			typ, n := f.u32(off), int64(f.u32(off+4))
			if typ == 0 {
				t.Fatal("no bitmaps extension")
			}
			if typ == 0x23852875 {
				nb, dir := int64(f.u32(off+8)), int64(f.u64(off+24))
				for i, at := int64(0), dir; i < nb; i++ {
					nameLen, extra := int64(binary.BigEndian.Uint16(f.read(at+18, 2))), int64(f.u32(at+20))
					if string(f.read(at+24+extra, int(nameLen))) == name {
						f.write(at+12, binary.BigEndian.AppendUint32(nil, f.u32(at+12)|1))
						return
					}
					at += (24 + extra + nameLen + 7) &^ 7
				}
				t.Fatalf("no bitmap %q", name)
			}
			off += 8 + (n+7)&^7
		}
	})
}
