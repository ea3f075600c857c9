package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// checkRepairChangesNothing runs Check with each of the repair modes on
// a copy of the damaged image at path and requires that it reports the
// damage, refuses the repair ("need to rebuild refcount structures"),
// and leaves every byte of the file as it was: the guest data that
// qemu-io wrote reads back through QEMU afterwards.
func checkRepairChangesNothing(t *testing.T, path string, readBack string, modes ...RepairMode) {
	t.Helper()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		p := filepath.Join(t.TempDir(), "copy.qcow2")
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{Repair: true})
		if err != nil {
			t.Fatalf("open for repair: %v", err)
		}
		r, err := im.Check(CheckOptions{Repair: mode})
		if cerr := im.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("repair mode %d: %v", mode, err)
		}
		if r.CheckErrors == 0 || r.LeaksFixed != 0 || r.CorruptionsFixed != 0 {
			t.Errorf("repair mode %d: %d check errors, %d leaks fixed, %d corruptions fixed; want the repair refused: %v",
				mode, r.CheckErrors, r.LeaksFixed, r.CorruptionsFixed, head(r.Messages, 5))
		}
		after, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// The header's dirty bit and the file's length may not change
		// either: the image is left exactly as it was.
		if i := testkit.FirstDiff(after, orig); i >= 0 {
			t.Errorf("repair mode %d changed the file at offset 0x%x (len %d -> %d)", mode, i, len(orig), len(after))
		}
		testkit.MustRun(t, "qemu-io", "-c", readBack, p)
	}
}

// TestRegress_CheckRefuses_RefblockOnData: a refcount table entry that
// names a data cluster. Repairing leaks through that "refcount block"
// wrote refcounts into the guest's data. As qemu-img, -r leaks refuses
// and changes nothing, and -r all rebuilds the refcount structures
// without touching the data: qemu-img check finds the result clean.
func TestRegress_CheckRefuses_RefblockOnData(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "r.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	rt := binary.BigEndian.Uint64(b[48:])         // refcount_table_offset
	binary.BigEndian.PutUint64(b[rt+8:], 0x50000) // reftable[1] -> the first data cluster
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	checkRepairChangesNothing(t, p, "read -P 1 0 1M", RepairLeaks)
	checkRebuildRepairs(t, p, "read -P 1 0 1M")
}

// TestCheck_RebuildsRefblockOutside: a refcount table entry past the end
// of the file. -r leaks reports it as qemu-img's does, a corruption
// (it refused, a check error: qemu-img's exit code is 2), and with
// nothing else to fix changes nothing; -r all grows the file over the
// bogus block, as qemu-img's check_refblocks does ("Repairing refcount
// block 1 is outside image"; the file is sparse there), and rebuilds
// the refcount structures: no longer than the block's end.
func TestCheck_RebuildsRefblockOutside(t *testing.T) {
	p, b := patchedQemuImage(t, "write -P 1 0 1M", func(b []byte) {
		rt := binary.BigEndian.Uint64(b[48:])
		binary.BigEndian.PutUint64(b[rt+8:], 100<<20) // reftable[1] -> 100 MiB, past the end
	})
	c := filepath.Join(t.TempDir(), "c.qcow2")
	if err := os.WriteFile(c, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := checkFile(t, c, RepairLeaks)
	if err != nil || r.Corruptions != 1 || r.CheckErrors != 0 || r.LeaksFixed != 0 || r.CorruptionsFixed != 0 {
		t.Errorf("-r leaks: %v %+v", err, r)
	}
	if after, err := os.ReadFile(c); err != nil || !bytes.Equal(after, b) {
		t.Errorf("-r leaks changed the image: %v", err)
	}
	checkRebuildRepairsUpTo(t, p, "read -P 1 0 1M", 100<<20+64<<10)
}

// TestCheck_RefusedRebuildDoesNotGrow: a refcount block past the end of
// the file beside a data cluster past it. -r all grew the file over the
// block (as QEMU's check_refblocks) and counted it fixed, then refused
// the rebuild it grew for (it would write over the data cluster past
// the end): an image the repair said it left as it was had grown by
// 7 MiB and read otherwise to qemu-img check (review). The growth waits
// for a rebuild that will happen: the file is left as it was.
func TestCheck_RefusedRebuildDoesNotGrow(t *testing.T) {
	p, b := patchedQemuImage(t, "write -P 0x5a 0 3M", func(b []byte) {
		rt := binary.BigEndian.Uint64(b[48:])
		binary.BigEndian.PutUint64(b[rt+8:], 0xa00000) // reftable[1] -> 10 MiB, past the end
		l1 := binary.BigEndian.Uint64(b[40:])
		l2 := binary.BigEndian.Uint64(b[l1:]) &^ (1 << 63)
		binary.BigEndian.PutUint64(b[l2+16:], 1<<63|0x800000) // guest cluster 2 -> 8 MiB, past the end
	})
	r, err := checkFile(t, p, RepairAll)
	if err != nil || r.CorruptionsFixed != 0 || r.Corruptions == 0 {
		t.Errorf("-r all: %v, %d corruptions (%d fixed), want a refusal fixing nothing", err, r.Corruptions, r.CorruptionsFixed)
	}
	after, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(b) {
		t.Errorf("the refused repair changed the file's length from %d to %d", len(b), len(after))
	}
}

// patchedQemuImage is a 64 MiB qcow2 image qemu-img created and qemu-io
// wrote (write, a qemu-io command), its bytes then changed by patch; it
// returns the path and the bytes written there.
func patchedQemuImage(t *testing.T, write string, patch func(b []byte)) (string, []byte) {
	t.Helper()
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "o.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", write, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	patch(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// checkFile opens the image at p (read-only without repair, else for
// repair), checks it with repair, and closes it; the error is the
// check's or the close's.
func checkFile(t *testing.T, p string, repair RepairMode) (*CheckResult, error) {
	t.Helper()
	im, err := Open(p, Options{Repair: repair != RepairNone, ReadOnly: repair == RepairNone})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(CheckOptions{Repair: repair})
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	return r, err
}

// checkRebuildRepairs repairs a copy of the image at path with -r all,
// which must rebuild the refcount structures and leave an image that our
// Check and qemu-img check find clean, with the guest data intact.
func checkRebuildRepairs(t *testing.T, path string, readBack string) {
	t.Helper()
	checkRebuildRepairsUpTo(t, path, readBack, 0)
}

// checkRebuildRepairsUpTo is checkRebuildRepairs for a file the repair
// may grow to maxSize bytes (0: the original length and 4 MiB).
func checkRebuildRepairsUpTo(t *testing.T, path string, readBack string, maxSize int64) {
	t.Helper()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rebuilt.qcow2")
	if err := os.WriteFile(p, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := checkFile(t, p, RepairAll)
	if err != nil || !r.Clean() || r.CorruptionsFixed == 0 || !strings.Contains(strings.Join(r.Messages, "\n"), "Rebuilding refcount structure") {
		t.Fatalf("-r all: %v, %d check errors, %d corruptions (%d fixed), %d leaks: %v",
			err, r.CheckErrors, r.Corruptions, r.CorruptionsFixed, r.Leaks, head(r.Messages, 8))
	}
	testkit.QemuCheck(t, p)
	testkit.MustRun(t, "qemu-io", "-c", readBack, p)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if maxSize == 0 {
		maxSize = int64(len(orig)) + 4<<20
	}
	if st.Size() > maxSize {
		t.Fatalf("the rebuild grew the file from %d to %d bytes", len(orig), st.Size())
	}
}

// TestRegress_CheckKeepsReferencesPastEOF: a truncated image whose
// tables reference clusters past the end. A leak repair once set the
// counts of those clusters to 0, and the next allocation handed one of
// them out again under its guest data. As qemu-img's, -r leaks and -r
// all now leave the image as it was (the references are corruption no
// repair cures; their counts are not leaks), and clusters written
// afterwards land elsewhere: qemu-img check finds no cluster referenced
// twice.
func TestRegress_CheckKeepsReferencesPastEOF(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "g.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 4M", p)
	// The first MiB of guest data (host 0x50000 on) stays in the file,
	// the other three are cut off.
	if err := os.Truncate(p, 0x50000+1<<20); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		c := filepath.Join(t.TempDir(), "copy.qcow2")
		if err := os.WriteFile(c, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := checkFile(t, c, mode)
		if err != nil || r.Corruptions == 0 || r.LeaksFixed != 0 || r.CorruptionsFixed != 0 {
			t.Fatalf("repair mode %d: %v, %d corruptions, %d leaks fixed, %d corruptions fixed: %v",
				mode, err, r.Corruptions, r.LeaksFixed, r.CorruptionsFixed, head(r.Messages, 5))
		}
		if after, _ := os.ReadFile(c); testkit.FirstDiff(after, orig) >= 0 {
			t.Fatalf("repair mode %d changed the file at 0x%x", mode, testkit.FirstDiff(after, orig))
		}
		im, err := Open(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(bytes.Repeat([]byte{2}, 4<<20), 8<<20); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 1M", "-c", "read -P 2 8M 4M", c)
		out, _, _ := testkit.Run(t, "qemu-img", "check", c)
		if strings.Contains(out, "reference=2") {
			t.Fatalf("repair mode %d: a cluster past the end was handed out again:\n%s", mode, out)
		}
	}
}

// TestRegress_BackingLoopRefused: an image backed by itself, or A backed
// by B backed by A (under any name for the same file), fails to open
// with ErrBackingLoop. Opening used to recurse until file descriptors ran
// out, for minutes, with an error thousands of characters long.
func TestRegress_BackingLoopRefused(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	a, b, self := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "self.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "16M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
	im, err := Open(b, Options{ReadOnly: true}) // a chain without a loop
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	testkit.MustRun(t, "qemu-img", "rebase", "-u", "-b", "./b.qcow2", "-F", "qcow2", a)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", self, "16M")
	testkit.MustRun(t, "qemu-img", "rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", self)
	for _, p := range []string{a, b, self} {
		if _, err := Open(p, Options{ReadOnly: true}); !errors.Is(err, ErrBackingLoop) {
			t.Errorf("open %s: %v, want ErrBackingLoop", filepath.Base(p), err)
		} else if len(err.Error()) > 300 {
			t.Errorf("open %s: a %d-character error", filepath.Base(p), len(err.Error()))
		}
	}
}

// TestRegress_CheckNoRebuildOverReferencesPastEOF: a reference wholly
// past the end of the file lets -r leaks free leaks (as qemu-img), but
// not -r all rebuild the refcount structures: the rebuild writes them
// past the end of the file, where the reference points, and the guest
// then read the new refcount table there (found by review; qemu-img 7.2
// aliases it the same way in other layouts). Here a data cluster counted
// 0 asks for the rebuild: refused, and nothing changes.
func TestRegress_CheckNoRebuildOverReferencesPastEOF(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "e.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 256k", p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	rb := be.Uint64(b[be.Uint64(b[48:]):]) // refcount block 0
	be.PutUint16(b[rb+5*2:], 0)            // cluster 5 (guest cluster 0's data) counted 0
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & 0xfffffffffffe00
	end := uint64(len(b))
	be.PutUint64(b[l2+3*8:], 1<<63|(end+0x10000)) // guest cluster 3: a cluster past the end
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	checkRepairChangesNothing(t, p, "read -P 1 0 128k", RepairAll)
}

// TestRegress_CheckNoSnapshotTableOverReferencesPastEOF: -r all does not
// rewrite an incomplete snapshot table while something references a
// region wholly past the end of the file: the new table would be
// allocated there, and the guest read it (found by the second review of
// noRebuild; QEMU's repair does that). The COPIED flag of the entry is
// still repaired, as qemu-img repairs it.
func TestRegress_CheckNoSnapshotTableOverReferencesPastEOF(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "s.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 256k", p)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "sn1", p)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 2 0 64k", p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	snaps := be.Uint64(b[64:])
	be.PutUint32(b[snaps+36:], 8) // extra data without the disk size: incomplete
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & 0xfffffffffffe00
	be.PutUint64(b[l2+10*8:], 1<<63|uint64(len(b))) // guest cluster 10: the first cluster past the end
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := checkFile(t, p, RepairAll)
	if err != nil || r.CheckErrors == 0 {
		t.Fatalf("-r all: %v, %+v: want the snapshot table's repair refused", err, r)
	}
	after, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if be.Uint64(after[64:]) != snaps || len(after) != len(b) {
		t.Fatalf("the snapshot table moved to 0x%x (file %d bytes, was %d)", be.Uint64(after[64:]), len(after), len(b))
	}
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0 640k 64k", "-c", "read -P 2 0 64k", p)
}
