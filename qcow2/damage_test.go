package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// damagedBase is a 1 GiB image with data in two L1 ranges (at 5000 and
// at 600 MiB) and one snapshot, with lazy refcounts when lazy is set.
func damagedBase(t *testing.T, lazy bool) []byte {
	t.Helper()
	d := memdev.New(memdev.Options{})
	if err := CreateDevice(d, CreateOptions{Size: 1 << 30, LazyRefcounts: lazy}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(100000, 3), 5000)
	mustWrite(t, im, pattern(4096, 4), 600<<20)
	if _, err := im.CreateSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return d.Bytes()
}

// Tables a writable open refuses are let by a read-only or repairing
// open (Q19): writes are refused, reads through an unaligned L1 entry
// fail with ErrCorrupt (synchronous and queued), reads elsewhere work,
// Check reports the damage, and a repair changes nothing, not even when
// the image is dirty.
func TestOpen_DamageLetByReadOnly(t *testing.T) {
	be := binary.BigEndian
	l1 := func(b []byte) uint64 { return be.Uint64(b[40:]) }
	rt := func(b []byte) uint64 { return be.Uint64(b[48:]) }
	snap := func(b []byte) uint64 { return be.Uint64(b[64:]) }
	cases := []struct {
		name     string
		edit     func(b []byte)
		readFail bool   // reading guest offset 5000 fails
		msg      string // in Check's messages
		rebuilt  bool   // the damage is in the refcount structures: -r all rebuilds them
	}{
		{"unaligned L1 entry", func(b []byte) { be.PutUint64(b[l1(b):], be.Uint64(b[l1(b):])+512) }, true,
			"Table is not cluster aligned; L1 entry corrupted", false},
		{"L1 entry reserved bits", func(b []byte) { be.PutUint64(b[l1(b):], be.Uint64(b[l1(b):])|4) }, false,
			"L1 entry with reserved bits set", false},
		{"unaligned refcount block", func(b []byte) { be.PutUint64(b[rt(b):], be.Uint64(b[rt(b):])+512) }, false,
			"refcount table entry corrupted", true},
		{"refcount table entry reserved bits", func(b []byte) { be.PutUint64(b[rt(b):], be.Uint64(b[rt(b):])|8) }, false,
			"refcount table entry 0 has reserved bits set", true},
		// Either the L1 entry or the table may be the broken side: no
		// rebuild (it would keep a garbage L2 table as it is).
		{"L2 table on the refcount table", func(b []byte) { be.PutUint64(b[l1(b):], 1<<63|rt(b)) }, false,
			"refcount=", false},
		{"refcount block on the L1 table", func(b []byte) { be.PutUint64(b[rt(b):], l1(b)) }, false,
			"refcount block 0", true},
		{"L2 table on the snapshot table", func(b []byte) { be.PutUint64(b[l1(b):], 1<<63|snap(b)) }, false,
			"reference=2", false},
		{"unaligned snapshot L1", func(b []byte) { be.PutUint64(b[snap(b):], be.Uint64(b[snap(b):])+512) }, false,
			"snapshot table entry corrupted", false},
		{"snapshot table past its end", func(b []byte) { be.PutUint32(b[snap(b)+36:], 1<<30) }, false,
			"ERROR snapshot table", false},
	}
	for _, tc := range cases {
		for _, lazy := range []bool{false, true} {
			name := tc.name
			if lazy {
				name += ", dirty"
			}
			t.Run(name, func(t *testing.T) {
				b := damagedBase(t, lazy)
				tc.edit(b)
				if lazy {
					be.PutUint64(b[72:], be.Uint64(b[72:])|format.IncompatDirty)
				}
				orig := append([]byte(nil), b...)
				if _, err := OpenDevice(memdev.FromBytes(append([]byte(nil), b...), memdev.Options{}), Options{}); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("writable open: %v, want ErrCorrupt", err)
				}
				for _, o := range []Options{{ReadOnly: true}, {Repair: true}} {
					d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
					im, err := OpenDevice(d, o)
					if err != nil {
						t.Fatalf("open %+v: %v", o, err)
					}
					damagedChecks(t, im, tc.readFail, tc.msg, o.Repair && !tc.rebuilt)
					if o.Repair && tc.rebuilt {
						rebuiltChecks(t, im, d)
						continue
					}
					if err := im.Close(); err != nil {
						t.Fatalf("close: %v", err)
					}
					if !bytes.Equal(d.Bytes(), orig) {
						t.Fatalf("open %+v changed the damaged image", o)
					}
				}
			})
		}
	}
}

// rebuiltChecks repairs damage in the refcount structures with -r all:
// the rebuild leaves the image clean, writable in the same open, not
// dirty, and clean again after more writes and a reopen.
func rebuiltChecks(t *testing.T, im *Image, d *memdev.Dev) {
	t.Helper()
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || !r.Clean() || r.CorruptionsFixed == 0 {
		t.Fatalf("-r all: %v %+v", err, r)
	}
	if im.ReadOnly() {
		t.Fatal("read-only after the rebuild")
	}
	mustWrite(t, im, pattern(200000, 8), 700<<20)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(d.Bytes()[72:])&format.IncompatDirty != 0 {
		t.Fatal("dirty after the rebuild and a close")
	}
	im, err = OpenDevice(d, Options{})
	if err != nil {
		t.Fatalf("reopen writable: %v", err)
	}
	defer im.Close()
	got := make([]byte, 200000)
	if _, err := im.ReadAt(got, 700<<20); err != nil || !bytes.Equal(got, pattern(200000, 8)) {
		t.Fatalf("read back: %v", err)
	}
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check after: %v %+v", err, r)
	}
}

func damagedChecks(t *testing.T, im *Image, readFail bool, msg string, repair bool) {
	t.Helper()
	if !im.ReadOnly() {
		t.Fatal("a damaged image opened writable")
	}
	if _, err := im.WriteAt([]byte{1}, 600<<20); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write: %v, want ErrReadOnly", err)
	}
	got := make([]byte, 4096)
	if _, err := im.ReadAt(got, 600<<20); err != nil || !bytes.Equal(got, pattern(4096, 4)) {
		t.Fatalf("read past the damage: %v", err)
	}
	_, err := im.ReadAt(got, 5000)
	if readFail != (err != nil) || (readFail && !errors.Is(err, ErrCorrupt)) {
		t.Fatalf("read through the damage: %v, want failure %v", err, readFail)
	}
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	req := &block.Req{Op: block.OpRead, Off: 4096, Buf: got}
	if err := q.Submit(req); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 1)
	if _, err := q.Wait(out, 1); err != nil {
		t.Fatal(err)
	}
	if readFail != (req.Err != nil) {
		t.Fatalf("queued read through the damage: %v, want failure %v", req.Err, readFail)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions == 0 || !strings.Contains(strings.Join(r.Messages, "\n"), msg) {
		t.Fatalf("check: %v %+v, want corruptions and %q", err, r, msg)
	}
	if !repair {
		return
	}
	r, err = im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || r.CheckErrors == 0 || r.CorruptionsFixed+r.LeaksFixed != 0 ||
		!strings.Contains(strings.Join(r.Messages, "\n"), "not repaired") {
		t.Fatalf("repair: %v %+v, want it refused", err, r)
	}
}

// A snapshot whose L1 names the active L1 table as an L2 table: applying
// it made the engine write guest L2 entries over the active L1 (found by
// review). ApplySnapshot refuses it with ErrCorrupt and changes nothing,
// as qemu-img snapshot -a refuses it.
func TestApplySnapshot_RefusesHostileL1(t *testing.T) {
	be := binary.BigEndian
	for _, tc := range []struct {
		name   string
		target func(b []byte) uint64
	}{
		{"active L1 table", func(b []byte) uint64 { return be.Uint64(b[40:]) }},
		{"refcount block", func(b []byte) uint64 { return be.Uint64(b[be.Uint64(b[48:]):]) }},
		{"past the file", func([]byte) uint64 { return 1 << 40 }},
	} {
		for _, grown := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/grown=%v", tc.name, grown), func(t *testing.T) {
				applyHostile(t, tc.target, grown)
			})
		}
	}
}

// applyHostile is a case of TestApplySnapshot_RefusesHostileL1; with
// grown, the image grew after the snapshot, so the apply would resize it
// first: the tables are checked before that (found by review), and the
// refusal leaves the size too.
func applyHostile(t *testing.T, target func(b []byte) uint64, grown bool) {
	be := binary.BigEndian
	b := damagedBase(t, false)
	sl1 := be.Uint64(b[be.Uint64(b[64:]):]) // the snapshot's L1 table
	be.PutUint64(b[sl1:], target(b))
	d := memdev.FromBytes(b, memdev.Options{})
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if grown {
		sz, _ := im.Size()
		if err := im.Truncate(2 * sz); err != nil {
			t.Fatal(err)
		}
	}
	size, _ := im.Size()
	orig := append([]byte(nil), d.Bytes()...)
	if err := im.ApplySnapshot("s1"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("apply: %v, want ErrCorrupt", err)
	}
	if !bytes.Equal(d.Bytes(), orig) {
		t.Fatal("a refused apply changed the image")
	}
	if sz, _ := im.Size(); sz != size {
		t.Fatalf("a refused apply resized the image from %d to %d", size, sz)
	}
	mustWrite(t, im, pattern(4096, 9), 0)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}

// A data cluster whose L2 entry names the snapshot table: an overwrite
// through it landed on the table (found by review; QEMU's overlap check
// covers the snapshot table). The write fails with ErrCorrupt and the
// table is intact.
func TestWrite_SnapshotTableOverlapMarksCorrupt(t *testing.T) {
	be := binary.BigEndian
	b := damagedBase(t, false)
	st := be.Uint64(b[64:])
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & format.L1OffsetMask
	// Guest cluster 1 holds data (5000+100000 spans clusters 0 and 1).
	be.PutUint64(b[l2+8:], 1<<63|st)
	d := memdev.FromBytes(b, memdev.Options{})
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := append([]byte(nil), d.Bytes()[st:st+512]...)
	if _, err := im.WriteAt(pattern(4096, 9), 64<<10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write through the entry: %v, want ErrCorrupt", err)
	}
	if !bytes.Equal(d.Bytes()[st:st+512], before) {
		t.Fatal("the snapshot table was overwritten")
	}
	im.Close()
}

// Damage names what a lenient open let by, as ErrCorrupt, and is nil on
// a sound image.
func TestDamage_Reported(t *testing.T) {
	b := damagedBase(t, false)
	im, err := OpenDevice(memdev.FromBytes(append([]byte(nil), b...), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Damage(); err != nil {
		t.Fatalf("a sound image: %v", err)
	}
	im.Close()
	l1 := binary.BigEndian.Uint64(b[40:])
	binary.BigEndian.PutUint64(b[l1:], binary.BigEndian.Uint64(b[l1:])+512)
	im, err = OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.Damage(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not cluster aligned") {
		t.Fatalf("Damage() = %v", err)
	}
}

// A dirty image (lazy refcounts) whose refcounts a repair cannot fix (a
// reference past the end of the file): the open's repair used to clear
// the dirty bit anyway, so later opens trusted the stale refcounts
// (found by a differential fuzz). Now a writable open fails, and an open
// for repair keeps the bit; -r all repairs only what qemu-img's does
// (the entry's COPIED flag: its cluster's count is 0).
func TestOpen_DirtyUnrepairableKeepsBit(t *testing.T) {
	be := binary.BigEndian
	b := damagedBase(t, true)
	be.PutUint64(b[72:], be.Uint64(b[72:])|format.IncompatDirty)
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & format.L1OffsetMask
	be.PutUint64(b[l2+5*8:], 1<<63|1<<40) // guest cluster 5: data 1 TiB out
	w := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
	if _, err := OpenDevice(w, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("writable open: %v, want ErrCorrupt", err)
	}
	if !bytes.Equal(w.Bytes(), b) {
		t.Fatal("the failed writable open changed the image")
	}
	d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
	im, err := OpenDevice(d, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || r.Corruptions == r.CorruptionsFixed || r.CorruptionsFixed != 1 || r.LeaksFixed != 0 {
		t.Fatalf("-r all: %v %+v, want the COPIED flag alone repaired", err, r)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	be.PutUint64(b[l2+5*8:], 1<<40)
	if got := d.Bytes(); be.Uint64(got[72:])&format.IncompatDirty == 0 || !bytes.Equal(got, b) {
		t.Fatal("the repair changed more than the COPIED flag or cleared the dirty bit")
	}
}

// A snapshot whose L1 names the bitmap directory as an L2 table:
// made active, the table would be written back over the directory
// (found by review; QEMU's overlap check covers the directory).
// ApplySnapshot refuses it and changes nothing.
func TestApplySnapshot_RefusesBitmapDirectoryL2(t *testing.T) {
	be := binary.BigEndian
	d := memdev.FromBytes(damagedBase(t, false), memdev.Options{})
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.AddBitmap("b0", 65536, true); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := d.Bytes()
	h, err := format.ParseHeader(b[:65536])
	if err != nil {
		t.Fatal(err)
	}
	var dir format.HostOff
	for _, e := range h.Extensions {
		if e.Type == format.ExtBitmaps {
			ext, err := format.ParseBitmapsExt(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			dir = ext.DirOffset
		}
	}
	if dir == 0 {
		t.Fatal("no bitmap directory")
	}
	sl1 := be.Uint64(b[be.Uint64(b[64:]):]) // the snapshot's L1 table
	be.PutUint64(b[sl1:], uint64(dir)&^0xffff)
	d = memdev.FromBytes(b, memdev.Options{})
	if im, err = OpenDevice(d, Options{}); err != nil {
		t.Fatal(err)
	}
	orig := append([]byte(nil), d.Bytes()...)
	if err := im.ApplySnapshot("s1"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "bitmap directory") {
		t.Fatalf("apply: %v, want ErrCorrupt naming the bitmap directory", err)
	}
	if !bytes.Equal(d.Bytes(), orig) {
		t.Fatal("a refused apply changed the image")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}
