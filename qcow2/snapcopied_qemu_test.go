package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An L2 entry that is a compressed descriptor with COPIED (bit 63) set,
// or a standard one with reserved bits set, is read by QEMU with those
// bits ignored (Q20), and so are the snapshot operations: qemu-img
// snapshot -c/-a/-d succeed on such an image, clear COPIED on the
// compressed entries they pass over, and keep the reserved bits.
// CreateSnapshot refused both with ErrCorrupt ("invalid L2 entry") and
// left the snapshot's new L1 table leaked; DeleteSnapshot and
// ApplySnapshot left the flag where QEMU clears it. Each case is run by
// qemu-img on one copy and by the engine on another, and qemu-img check
// must say the same of both.

// snapcopiedImage makes a 1 MiB image with qemu-img and qemu-io: a
// compressed write of pattern 1 at 0 (a standard one with !compressed),
// with snap a snapshot "s" of it and then a write of pattern 2 at 128k
// (the active L2 table copied away from the snapshot's).
func snapcopiedImage(t *testing.T, name string, compressed, snap bool) string {
	t.Helper()
	p := filepath.Join(testkit.Dir(t), name)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	w := "write -P 1 0 64k"
	if compressed {
		w = "write -c -P 1 0 64k"
	}
	testkit.MustRun(t, "qemu-io", "-c", w, p)
	if snap {
		testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", p)
		// QEMU writes a compressed cluster only where none is: a
		// standard write elsewhere gives the active L1 its own copy
		// of the table, which keeps the compressed entry.
		testkit.MustRun(t, "qemu-io", "-c", "write -P 2 128k 64k", p)
	}
	return p
}

// snapcopiedDamage ORs bits into entry 0 of the L2 table that entry 0 of
// the active L1 (fromSnap: of the first snapshot's L1) names.
func snapcopiedDamage(t *testing.T, p string, fromSnap bool, bits uint64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	q := func(off uint64) uint64 {
		var b [8]byte
		if _, err := f.ReadAt(b[:], int64(off)); err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint64(b[:])
	}
	l1 := q(40)
	if fromSnap {
		l1 = q(q(64)) // the first snapshot header's l1_table_offset
	}
	l2 := q(l1) & 0x00fffffffffffe00
	if l2 == 0 {
		t.Fatal("no L2 table")
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], q(l2)|bits)
	if _, err := f.WriteAt(b[:], int64(l2)); err != nil {
		t.Fatal(err)
	}
}

func snapcopiedCopy(t *testing.T, src, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(src), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func snapcopiedCheck(t *testing.T, p string) testkit.QemuCheckResult {
	t.Helper()
	r, err := testkit.QemuImgCheck(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSnapCopiedCompressedMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	const copied, reserved = uint64(1) << 63, uint64(1)<<57 | 1<<1
	type op struct {
		qemu []string // qemu-img snapshot arguments
		eng  func(im *Image) error
	}
	create := op{[]string{"-c", "t"}, func(im *Image) error { _, err := im.CreateSnapshot("t"); return err }}
	apply := op{[]string{"-a", "s"}, func(im *Image) error { return im.ApplySnapshot("s") }}
	del := op{[]string{"-d", "s"}, func(im *Image) error { return im.DeleteSnapshot("s") }}
	for _, tc := range []struct {
		name             string
		compressed, snap bool
		inSnap           bool // the damage is in the snapshot's table
		bits             uint64
		op               op
	}{
		{"create/compressed-copied", true, false, false, copied, create},
		{"create/reserved", false, false, false, reserved, create},
		{"create/compressed-copied-in-snapshot", true, true, true, copied, create},
		{"create/compressed-copied-active-with-snapshot", true, true, false, copied, create},
		{"apply/compressed-copied-active", true, true, false, copied, apply},
		{"apply/compressed-copied-in-snapshot", true, true, true, copied, apply},
		{"delete/compressed-copied-active", true, true, false, copied, del},
		{"delete/compressed-copied-in-snapshot", true, true, true, copied, del},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := snapcopiedImage(t, "orig.qcow2", tc.compressed, tc.snap)
			snapcopiedDamage(t, orig, tc.inSnap, tc.bits)
			qp := snapcopiedCopy(t, orig, "qemu.qcow2")
			ep := snapcopiedCopy(t, orig, "engine.qcow2")
			testkit.MustRun(t, "qemu-img", append([]string{"snapshot"}, append(tc.op.qemu, qp)...)...)
			// Repair: the image is damaged by design, which the
			// invariants' check at a flush would call a failure.
			im, err := Open(ep, Options{Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.op.eng(im); err != nil {
				im.Close()
				t.Fatalf("engine: %v (qemu-img snapshot %v succeeded)", err, tc.op.qemu)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			want, got := snapcopiedCheck(t, qp), snapcopiedCheck(t, ep)
			if got.Exit != want.Exit || got.Corruptions != want.Corruptions || got.Leaks != want.Leaks || got.CheckErrors != want.CheckErrors {
				t.Fatalf("qemu-img check after the engine: %s\n%s\nafter qemu-img: %s\n%s", got, got.Stderr, want, want.Stderr)
			}
			if _, e, code := testkit.Run(t, "qemu-img", "compare", "-q", qp, ep); code != 0 {
				t.Fatalf("qemu-img compare: exit %d %s", code, e)
			}
			ql := testkit.MustRun(t, "qemu-img", "snapshot", "-l", qp)
			el := testkit.MustRun(t, "qemu-img", "snapshot", "-l", ep)
			if (len(ql) == 0) != (len(el) == 0) {
				t.Fatalf("snapshot lists differ:\n%s\n%s", ql, el)
			}
		})
	}
}

// An entry the snapshot walk cannot count (a standard entry whose host
// offset is not cluster aligned) refuses CreateSnapshot: qemu-img fails
// too. The refusal now leaves the image as it was: the increments made
// before that entry are taken back and the snapshot's L1 copy is freed
// (it was leaked).
func TestSnapCopiedUncountableEntryRefusedUnchanged(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	// Entry 2 is the bad one: entry 0's increment comes before it.
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 128k 64k", p)
	{
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b [8]byte
		f.ReadAt(b[:], 40)
		f.ReadAt(b[:], int64(binary.BigEndian.Uint64(b[:])))
		l2 := int64(binary.BigEndian.Uint64(b[:]) & 0x00fffffffffffe00)
		f.ReadAt(b[:], l2+2*8)
		binary.BigEndian.PutUint64(b[:], binary.BigEndian.Uint64(b[:])|0x200)
		f.WriteAt(b[:], l2+2*8)
		f.Close()
	}
	before := snapcopiedCheck(t, p)
	im, err := Open(p, Options{Repair: true}) // as above
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.CreateSnapshot("s"); err == nil {
		im.Close()
		t.Fatal("CreateSnapshot through an unaligned entry succeeded")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	after := snapcopiedCheck(t, p)
	if after.Exit != before.Exit || after.Corruptions != before.Corruptions || after.Leaks != before.Leaks {
		t.Fatalf("qemu-img check after the refused snapshot: %s\n%s\nbefore: %s\n%s", after, after.Stderr, before, before.Stderr)
	}
	if l := testkit.MustRun(t, "qemu-img", "snapshot", "-l", p); l != "" {
		t.Fatalf("snapshot list: %q", l)
	}
}

// qemu-img check -r all leaves a compressed entry with COPIED as it is
// (and reports it, exit 2); Check with RepairAll does the same.
func TestSnapCopiedRepairAllMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, inSnap := range []bool{false, true} {
		orig := snapcopiedImage(t, "orig.qcow2", true, true)
		snapcopiedDamage(t, orig, inSnap, 1<<63)
		qp := snapcopiedCopy(t, orig, "qemu.qcow2")
		ep := snapcopiedCopy(t, orig, "engine.qcow2")
		_, _, qcode := testkit.Run(t, "qemu-img", "check", "-r", "all", qp)
		im, err := Open(ep, Options{Repair: true})
		if err != nil {
			t.Fatal(err)
		}
		r, err := im.Check(CheckOptions{Repair: RepairAll})
		if err != nil {
			im.Close()
			t.Fatal(err)
		}
		im.Close()
		if qcode != 2 || r.Corruptions != 1 || r.CorruptionsFixed != 0 {
			t.Fatalf("in snapshot %v: qemu-img check -r all exit %d; engine %d corruptions, %d fixed: %v", inSnap, qcode, r.Corruptions, r.CorruptionsFixed, r.Messages)
		}
		want, got := snapcopiedCheck(t, qp), snapcopiedCheck(t, ep)
		if got.Exit != want.Exit || got.Corruptions != want.Corruptions || got.Leaks != want.Leaks {
			t.Fatalf("in snapshot %v: after the engine's repair: %s\n%s\nafter qemu-img's: %s\n%s", inSnap, got, got.Stderr, want, want.Stderr)
		}
	}
}
