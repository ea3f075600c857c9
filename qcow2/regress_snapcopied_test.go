package qcow2

import (
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// A CreateSnapshot whose write of the active L1 (the entries without
// COPIED, written before the flush that makes the raised counts
// durable) failed once gave up the image's writes and left the raised
// counts in the caches: the Close after it wrote them under the L1 still
// flagged COPIED on the media (qemu-img check: ERROR OFLAG_COPIED,
// refcount=2, exit 2). The increments are now undone and the flags set
// back by the counts: the image is as it was, and stays writable.
func TestRegress_FailedActiveL1WriteInCreateSnapshot(t *testing.T) {
	const cs = 4096
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	ed := errordev.New(mem, nil, errordev.Options{})
	im, err := OpenDevice(ed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(3*cs, 1), 0)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	l1 := int64(im.hdr.L1TableOffset)
	var fired atomic.Bool
	ed.SetInjector(errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		if op == errordev.Write && off == l1 && strings.Contains(string(debug.Stack()), ").CreateSnapshot(") &&
			fired.CompareAndSwap(false, true) {
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
}

// A DeleteSnapshot (or ApplySnapshot) whose flush before setting COPIED
// by the new counts failed once returned its error with the flags never
// set: the retried Flush and the Close wrote the lowered counts, and the
// closed image had clusters at refcount 1 without COPIED (qemu-img
// check: ERROR OFLAG_COPIED, exit 2). The flags now stay owed until a
// later Flush or Close with no allocation in flight sets them.
func TestRegress_FailedCopiedFixAfterDeleteSnapshot(t *testing.T) {
	const cs = 4096
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	ed := errordev.New(mem, nil, errordev.Options{})
	im, err := OpenDevice(ed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(3*cs, 1), 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	var fired atomic.Bool
	ed.SetInjector(errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		if op == errordev.Flush && strings.Contains(string(debug.Stack()), ").fixCopiedLocked(") &&
			fired.CompareAndSwap(false, true) {
			return errordev.ErrInjectedEIO
		}
		return nil
	}))
	if err := im.DeleteSnapshot("s"); err == nil || !fired.Load() {
		t.Fatalf("DeleteSnapshot: %v (fault fired: %v), want the injected error", err, fired.Load())
	}
	if err := im.Flush(); err != nil {
		t.Fatalf("retried flush: %v", err)
	}
	// Checked after the Flush, as a power cut would leave it.
	im2 := openCheckedAfterFailedSnapshot(t, mem)
	if got := testkit.ReadAll(t, im2); !equalPrefix(got, pattern(3*cs, 1)) {
		t.Fatal("data lost")
	}
	if err := im.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	openCheckedAfterFailedSnapshot(t, mem)
}
