package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// bitmapRefusedImage is a 16M image with data at 0 and two persistent
// bitmaps, the first damaged by fn (its directory entry) or, if table
// is not 0, its first bitmap table entry set to table; leak also leaks
// the data cluster (a repair would have something to write). It returns
// the image's bytes.
func bitmapRefusedImage(t *testing.T, p string, fn func(*format.BitmapEntry), table uint64, leak bool) []byte {
	t.Helper()
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "bm")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "bm2")
	var tableAt uint64
	damageBitmap(t, p, func(e *format.BitmapEntry) {
		tableAt = uint64(e.TableOffset)
		if fn != nil {
			fn(e)
		}
	})
	if table != 0 || leak {
		damage(t, p, func(f imageFile) {
			if table != 0 {
				f.putU64(int64(tableAt), table)
			}
			if leak {
				f.write(int64(f.u64(int64(f.u64(40)))&entryMask), make([]byte, 8))
			}
		})
	}
	return mustReadFile(t, p)
}

// TestCheck_BitmapReservedFlagLikeQemu: a persistent bitmap whose flags
// set bit 2 (the specification's extra_data_compatible, one of QEMU
// 7.2's BME_RESERVED_FLAGS) makes QEMU refuse every open ("Bitmap 'bm'
// doesn't satisfy the constraints"). qimg took the bit for a known one:
// its io wrote the image (keeping the bitmap) and check -r leaks and -r
// all repaired it. Now a write is refused and changes nothing, and a
// repair fails as qemu-img's, in its words, the image left as it was;
// the plain check still reports the bitmap as a corruption (exit 2,
// where qemu-img cannot open it, exit 1) and info shows it.
func TestCheck_BitmapReservedFlagLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose: not checked at the end
	for _, leak := range []bool{false, true} {
		b := bitmapRefusedImage(t, filepath.Join(d, "f.qcow2"), func(e *format.BitmapEntry) { e.Flags |= 1 << 2 }, 0, leak)
		for _, mode := range [][]string{{"-r", "leaks"}, {"-r", "all"}} {
			compareRefusedCheck(t, d, b, fmt.Sprintf("leak %v", leak), mode)
		}
		ours, theirs := twoCopies(t, d, b)
		_, qe, qcode := testkit.Run(t, "qemu-io", "-c", "write 0 512", theirs)
		_, e, code := runQ(t, "io", "-c", "write 0 512", ours)
		if qcode == 0 || code != 1 || !strings.Contains(e, "flags 0x6") {
			t.Errorf("leak %v: io write: exit %d %s (qemu-io: exit %d %s)", leak, code, e, qcode, qe)
		}
		if !bytes.Equal(mustReadFile(t, ours), b) {
			t.Errorf("leak %v: the refused write changed the image", leak)
		}
		if _, e, code := runQ(t, "check", ours); code != 2 || !strings.Contains(e, `ERROR bitmaps: qcow2: image is corrupt: bitmaps = 0x0: bitmap "bm": flags 0x6`) {
			t.Errorf("leak %v: check: exit %d\n%s", leak, code, e)
		}
		if out := mustQ(t, "info", ours); !strings.Contains(out, "name: bm\n") {
			t.Errorf("leak %v: info:\n%s", leak, out)
		}
	}
}

// TestCheck_BitmapTableEntryDamagedLikeQemu: a bitmap table entry with
// reserved bits set (low or high) or an unaligned offset makes QEMU
// 7.2 refuse every open ("Could not read bitmap_table table from image
// for bitmap 'bm': Invalid argument"). qimg's check -r leaks and -r all
// repaired the image's leaks all the same; now they fail as qemu-img's,
// in its words, and leave the image as it was. The plain check reports
// the entry as a corruption (exit 2; qemu-img cannot open it, exit 1).
func TestCheck_BitmapTableEntryDamagedLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose: not checked at the end
	for _, c := range []struct {
		name  string
		entry uint64
		want  string
	}{
		{"reserved low", 0x2, "reserved bits set"},
		{"reserved high", 1 << 56, "reserved bits set"},
		{"unaligned", 0x10200, "data cluster not aligned"},
	} {
		for _, leak := range []bool{false, true} {
			b := bitmapRefusedImage(t, filepath.Join(d, "t.qcow2"), nil, c.entry, leak)
			for _, mode := range [][]string{{"-r", "leaks"}, {"-r", "all"}} {
				compareRefusedCheck(t, d, b, fmt.Sprintf("%s, leak %v", c.name, leak), mode)
			}
			ours, _ := twoCopies(t, d, b)
			if _, e, code := runQ(t, "check", ours); code != 2 || !strings.Contains(e, "ERROR bitmaps") || !strings.Contains(e, c.want) {
				t.Errorf("%s, leak %v: check: exit %d\n%s", c.name, leak, code, e)
			}
		}
	}
}

// compareRefusedCheck runs check with mode on two copies of the image
// b, by qimg and by qemu-img: the same words (qimg's program name
// aside), exit code and image bytes after, and qemu-img's is a refusal.
func compareRefusedCheck(t *testing.T, d string, b []byte, name string, mode []string) {
	t.Helper()
	ours, theirs := twoCopies(t, d, b)
	o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
	qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
	e = strings.ReplaceAll(e, "qimg: check: ", "qemu-img: ")
	if o != strings.ReplaceAll(qo, theirs, ours) || e != strings.ReplaceAll(qe, theirs, ours) || code != qcode || qcode != 1 {
		t.Errorf("%s, check %q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", name, mode, code, e, o, qcode, qe, qo)
	}
	if !bytes.Equal(mustReadFile(t, ours), b) || !bytes.Equal(mustReadFile(t, theirs), b) {
		t.Errorf("%s, check %q: the image changed", name, mode)
	}
}
