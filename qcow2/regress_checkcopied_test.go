package qcow2

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// clonesClean opens every clone and fails t on a corruption other than
// a COPIED flag missing on a count of 1 (which only costs a copy); so
// must qemu-img check (qemuCheckClone).
func clonesClean(t *testing.T, clones []*memdev.Dev) {
	t.Helper()
	for i, cl := range clones {
		before := cloneForQemu(cl)
		im, err := OpenDevice(cl, Options{})
		if err != nil {
			t.Fatalf("clone %d: open: %v", i, err)
		}
		r, err := im.Check(CheckOptions{MaxMessages: 1 << 20})
		im.Close()
		if err != nil || (r.Corruptions != 0 && !onlyMissingCopied(r.Messages)) {
			var ms []string
			for _, m := range r.Messages {
				if strings.HasPrefix(m, "ERROR") {
					ms = append(ms, m)
				}
			}
			t.Fatalf("clone %d of %d: check: %v, %d corruptions: %v", i, len(clones), err, r.Corruptions, ms[:min(len(ms), 3)])
		}
		qemuCheckClone(t, i, before, cl)
	}
}

// Check's COPIED repair set flags from counts of 1 that were only in the
// cache: counts its own leak fix had just lowered (2 for one reference,
// the leak a crash inside a snapshot create leaves), with nothing
// ordering the flags' writes after them. A crash kept a flag and lost
// the count: COPIED on a count of 2, a corruption (Q6). The repair now
// flushes before it sets a flag.
func TestRegress_CheckCopiedAfterLeakFix(t *testing.T) {
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		const cs = 4096
		mem := memdev.New(memdev.Options{})
		if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		hd := &hookDev{Dev: mem, before: func() {}}
		im, err := OpenDevice(hd, Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, im, bytes.Repeat([]byte{0xa1}, 4*cs), 0)
		im.mu.Lock()
		for g := int64(0); g < 4*cs; g += cs {
			e, err := im.entry(format.GuestOff(g))
			if err == nil {
				err = im.updateRefcountLocked(im.g.HostCluster(e.Offset()), 1)
			}
			if err == nil {
				err = im.setEntry(format.GuestOff(g), format.MakeL2(e.Offset(), false, false))
			}
			if err != nil {
				im.mu.Unlock()
				t.Fatal(err)
			}
		}
		im.mu.Unlock()
		if err := im.Flush(); err != nil {
			t.Fatal(err)
		}
		cc := newCrashClones(mem, 11)
		cc.during(hd, func() {
			if r, err := im.Check(CheckOptions{Repair: mode}); err != nil || r.LeaksFixed != 4 {
				t.Errorf("repair %d: %v %+v", mode, err, r)
			}
		})
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		clonesClean(t, cc.clones)
	}
}

// The same with the counts a snapshot delete lowered before its flush
// failed: written, not durable, the repair set the flags from them.
func TestRegress_CheckCopiedAfterFailedDeleteFlush(t *testing.T) {
	const cs = 4096
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	hd := &hookDev{Dev: mem, before: func() {}}
	var flushes, failAt atomic.Int64
	failAt.Store(-1)
	ed := errordev.New(hd, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		if op == errordev.Flush && flushes.Add(1)-1 == failAt.Load() {
			return errordev.ErrInjectedEIO
		}
		return nil
	}), errordev.Options{})
	im, err := OpenDevice(ed, Options{NoPassDiscard: true})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0xa1}, 4*cs), 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	failAt.Store(flushes.Load() + 2) // the delete's third flush, its COPIED fix's
	if err := im.DeleteSnapshot("s"); err == nil {
		t.Fatal("the delete's flush did not fail")
	}
	cc := newCrashClones(mem, 7)
	cc.during(hd, func() {
		if _, err := im.Check(CheckOptions{Repair: RepairAll}); err != nil {
			t.Error(err)
		}
	})
	im.Close()
	clonesClean(t, cc.clones)
}
