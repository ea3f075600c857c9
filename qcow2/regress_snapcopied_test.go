package qcow2

import (
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/internal/testkit"
)

// A CreateSnapshot whose write of the active L1 (the entries without
// COPIED, written before the flush that makes the raised counts
// durable) failed once gave up the image's writes and left the raised
// counts in the caches: the Close after it wrote them under the L1 still
// flagged COPIED on the media (qemu-img check: ERROR OFLAG_COPIED,
// refcount=2, exit 2). The increments are now undone and the flags set
// back by the counts: the image is as it was, and stays writable.
//
// The same for a failure of the flush after that write (the device's
// flush, or the write-back of an L2 table or a refcount block inside
// it): the raised counts stayed, as leaks of the snapshot's L1 and of
// the tables counted twice (qemu-img check exit 3); they are undone too
// (the next successful flush writes the lowered counts, then the flags).
func TestRegress_FailedActiveL1WriteInCreateSnapshot(t *testing.T) {
	const cs = 4096
	for _, tc := range []struct {
		name string
		op   errordev.Op
		off  func(im *Image) int64
	}{
		{"L1 write", errordev.Write, func(im *Image) int64 { return int64(im.hdr.L1TableOffset) }},
		{"device flush", errordev.Flush, func(*Image) int64 { return -1 }},
		{"refcount block write-back", errordev.Write, func(im *Image) int64 { return int64(im.reftable[0]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, ed, im := snapFaultImage(t, false)
			l1 := int64(im.hdr.L1TableOffset)
			var fired, l1Written atomic.Bool
			// The first op of the kind, at the offset, from the L1's
			// write on (the flush that follows it, for the others).
			ed.SetInjector(errordev.InjectorFunc(func(o errordev.Op, at, n int64) error {
				if !strings.Contains(string(debug.Stack()), ").CreateSnapshot(") {
					return nil
				}
				if o == errordev.Write && at == l1 {
					l1Written.Store(true)
				}
				if o == tc.op && (tc.off(im) < 0 || at == tc.off(im)) && l1Written.Load() && fired.CompareAndSwap(false, true) {
					return errordev.ErrInjectedEIO
				}
				return nil
			}))
			if _, err := im.CreateSnapshot("s"); err == nil || !fired.Load() {
				t.Fatalf("CreateSnapshot: %v (fault fired: %v), want the injected error", err, fired.Load())
			}
			// A one-off fault: the image keeps its writes and closes cleanly.
			mustWrite(t, im, pattern(cs, 9), 4*cs)
			if err := im.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			im2 := openCheckedAfterFailedSnapshot(t, mem)
			got := testkit.ReadAll(t, im2)
			if !equalPrefix(got, pattern(3*cs, 1)) || !equalPrefix(got[4*cs:], pattern(cs, 9)) {
				t.Fatal("data lost")
			}
			if len(im2.Snapshots()) != 0 {
				t.Fatalf("snapshots %v after a failed create", im2.Snapshots())
			}
			// Undone, not only consistent: without the undo the write
			// above copies the L2 table counted twice, and the old one
			// and the snapshot's L1 leak.
			p := filepath.Join(testkit.Dir(t), "strict.qcow2")
			if err := mem.WriteFile(p); err != nil {
				t.Fatal(err)
			}
			testkit.QemuCheck(t, p)
		})
	}
}

// A DeleteSnapshot (or ApplySnapshot) whose flush before setting COPIED
// by the new counts failed once returned its error with the flags never
// set: the retried Flush and the Close wrote the lowered counts, and the
// closed image had clusters at refcount 1 without COPIED (qemu-img
// check: ERROR OFLAG_COPIED, exit 2). The flags now stay owed until a
// later Flush or Close with no allocation in flight sets them.
func TestRegress_FailedCopiedFixAfterDeleteSnapshot(t *testing.T) {
	deleteSnapshotFailingOnce(t, errordev.Flush, false, "fixCopiedLocked")
}

// The writes a Flush covers are durable before it sets owed COPIED
// flags: a failure there keeps the flags owed and does not fail the
// Flush (it failed it, though every write was durable), and the Close
// after it sets them.
func TestRegress_FlushNotFailedBySettlingFlags(t *testing.T) {
	mem, ed, im := snapFaultImage(t, true)
	fired := failOnceIn(ed, errordev.Flush, -1, "fixCopiedLocked")
	if err := im.DeleteSnapshot("s"); err == nil || !fired.Load() {
		t.Fatalf("DeleteSnapshot: %v (fault fired: %v), want the injected error", err, fired.Load())
	}
	fired = failOnceIn(ed, errordev.Write, int64(im.hdr.L1TableOffset), "settleCopiedLocked")
	if err := im.Flush(); err != nil || !fired.Load() {
		t.Fatalf("flush: %v (settling failed: %v), want nil after a failed settling", err, fired.Load())
	}
	if !im.copiedOwed {
		t.Fatal("flags not owed after a failed settling")
	}
	if err := im.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	openCheckedAfterFailedSnapshot(t, mem)
	p := filepath.Join(testkit.Dir(t), "strict.qcow2")
	if err := mem.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
}
