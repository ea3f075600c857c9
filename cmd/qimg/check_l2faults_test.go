package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_InvalidL2EntriesLikeQemu: L2 entries with reserved bits, an
// unaligned offset, both, or COPIED set on a compressed cluster, in
// version 2, 3 and extended L2 images, are reported as qemu-img check
// reports them (its words, one corruption per fault, the entry in the
// allocation statistics, its OFLAG_COPIED check), and -r leaks and -r
// all leave the same bytes as qemu-img's (-r all zeroes an unaligned
// preallocated cluster). qimg worded these its own way, left them out
// of the statistics, skipped their COPIED check, counted the zero flag
// of a version 2 image as corruption, and -r all raised the refcount of
// the data cluster an unaligned preallocated one ran into; an entry
// wholly past the end of the file made both repairs refuse.
func TestCheck_InvalidL2EntriesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	base := filepath.Join(d, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 32M 64k", base)
	plain := filepath.Join(d, "plain.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", plain, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", plain)
	comp := filepath.Join(d, "comp.qcow2")
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", plain, comp)
	v2 := filepath.Join(d, "v2.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 32M 64k", v2)
	xl2 := filepath.Join(d, "xl2.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", xl2, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 32M 64k", xl2)
	// A table only a snapshot refers to (the active one was copied on
	// write): -r all zeroes its entry too, written past the cache.
	snap := filepath.Join(d, "snap.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", snap, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 128k", snap)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", snap)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 0 64k", snap)
	be := binary.BigEndian
	for _, c := range []struct {
		img    string
		entry  uint64 // the first entry of the first L2 table (snap: the second, of the snapshot's)
		bitmap uint64 // its subcluster bitmap (extended L2)
	}{
		{base, 0x8100000000050000, 0},
		{base, 0x8000000000050200, 0},
		{base, 0x8100000000050200, 0},
		{base, 0x0100000000050200, 0},
		{base, 0x0000000000050200, 0},
		{base, 0x0100000000050000, 0},
		// Preallocated (zero flag) and unaligned: -r all zeroes it.
		{base, 0x8000000000050201, 0},
		{comp, 0xc000000000050000, 0},
		// Wholly past the end of the file (its count 0, COPIED or
		// not): the data cluster it replaced is a leak -r leaks frees
		// and -r all clears COPIED, as qemu-img (qimg refused both).
		{base, 0x8000000010000000, 0},
		{base, 0x0000000010000000, 0},
		// The zero flag in a version 2 image: a zero cluster to
		// QEMU's check, no corruption; with reserved bits too.
		{v2, 0x8000000000050001, 0},
		{v2, 0x0000000000050001, 0},
		{v2, 0x8000000000050003, 0},
		// Extended L2: bit 0, reserved, unaligned, unaligned with
		// nothing allocated (preallocated).
		{xl2, 0x8000000000050001, 0xffffffff},
		{xl2, 0x8100000000050000, 0xffffffff},
		{xl2, 0x8000000000050200, 0xffffffff},
		{xl2, 0x8000000000050200, 0xffffffff00000000},
		// Only the allocated subclusters become zero.
		{xl2, 0x8000000000050200, 0},
		{xl2, 0x8000000000050200, 0x0000ffff00000000},
		{snap, 0x0000000000050201, 0},
	} {
		b, err := os.ReadFile(c.img)
		if err != nil {
			t.Fatal(err)
		}
		l1, at := be.Uint64(b[40:]), uint64(0)
		if c.img == snap {
			sn := snapshotTable(t, b)
			if len(sn) != 1 {
				t.Fatalf("snapshots %v", sn)
			}
			l1, at = uint64(sn[0].L1TableOffset), 8
		}
		l2 := be.Uint64(b[l1:]) & 0x00fffffffffffe00
		if c.img == snap && l2 == be.Uint64(b[be.Uint64(b[40:]):])&0x00fffffffffffe00 {
			t.Fatal("the snapshot shares the active L2 table")
		}
		be.PutUint64(b[l2+at:], c.entry)
		if c.img == xl2 {
			be.PutUint64(b[l2+8:], c.bitmap)
		}
		for _, mode := range [][]string{nil, {"-r", "leaks"}, {"-r", "all"}, {"--output=json"}} {
			name := fmt.Sprintf("%s %x/%x %q", filepath.Base(c.img), c.entry, c.bitmap, mode)
			ours, theirs := twoCopies(t, d, b)
			o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
			qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
			if o != strings.ReplaceAll(qo, theirs, ours) || e != qe || code != qcode {
				t.Errorf("%s: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", name, code, e, o, qcode, qe, qo)
			}
			ob, _ := os.ReadFile(ours)
			qb, _ := os.ReadFile(theirs)
			if !bytes.Equal(ob, qb) {
				t.Errorf("%s: the images differ after the check (at %d)", name, testkit.FirstDiff(ob, qb))
			}
		}
	}
}
