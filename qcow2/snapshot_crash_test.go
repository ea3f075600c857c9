package qcow2

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// snapCrashPoint is a crash clone taken during a snapshot workload, with
// what the clone must show: the active disk reads, sector by sector, as
// the view before or after the operation in flight; the snapshots in
// must exist; every snapshot present reads as when it was taken.
type snapCrashPoint struct {
	op         int // the device op it was taken before
	dev        *memdev.Dev
	prev, next []byte
	must       map[string]bool
	views      map[string][]byte
}

// TestCrash_Snapshot crashes create, apply and delete (and the writes
// between them, into shared clusters) at every device op, and checks each
// clone: no corruption, the active view and every snapshot's view intact.
// Every op (about 250 per case) is a crash point, or crashPoints of them
// evenly spaced, half per case (under the race detector 40 per case: a
// first run counts the ops, and only the chosen ones are cloned).
func TestCrash_Snapshot(t *testing.T) {
	t.Parallel()
	points := crashPoints(0, 80) // 0: every op
	for _, co := range []CreateOptions{{ClusterSize: 4096}, {ClusterSize: 4096, LazyRefcounts: true}} {
		t.Run("lazy="+map[bool]string{false: "off", true: "on"}[co.LazyRefcounts], func(t *testing.T) {
			seed := testkit.Rand(t).Uint64()
			step := 1
			if points > 0 {
				step = max(1, snapCrashWorkload(t, co, seed, 0, nil)/max(1, points/2))
			}
			var pts []snapCrashPoint
			snapCrashWorkload(t, co, seed, step, func(p snapCrashPoint) { pts = append(pts, p) })
			tried := 0
			for _, p := range pts {
				if !verifySnapCrash(t, p.op, p) {
					t.FailNow()
				}
				tried++
			}
			t.Logf("%d crash points", tried)
		})
	}
}

// snapCrashWorkload runs the snapshot workload, hands every step-th
// crash point (before op 0, step, 2*step, ...) to keep (step 0: none)
// and returns how many device ops it ran.
func snapCrashWorkload(t *testing.T, co CreateOptions, seed uint64, step int, keep func(snapCrashPoint)) int {
	const size = 1 << 20
	co.Size = size
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	view := make([]byte, size)
	prev, next := view, view
	must := map[string]bool{}
	views := map[string][]byte{}
	crng := rand.New(rand.NewPCG(seed, 3))
	ops := 0
	dev := &hookDev{Dev: mem}
	dev.before = func() {
		k := ops
		ops++
		if step == 0 || k%step != 0 {
			return
		}
		keep(snapCrashPoint{op: k, dev: mem.CrashClone(crng, crng.Float64()), prev: prev, next: next,
			must: maps.Clone(must), views: maps.Clone(views)})
	}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// op runs one step whose outcome is view nv (nil: unchanged).
	op := func(nv []byte, f func() error) {
		t.Helper()
		if nv != nil {
			next = nv
		}
		if err := f(); err != nil {
			t.Fatal(err)
		}
		if err := im.Flush(); err != nil {
			t.Fatal(err)
		}
		prev = next
	}
	write := func(off int64, b []byte) {
		nv := append([]byte(nil), next...)
		copy(nv[off:], b)
		op(nv, func() error { _, err := im.WriteAt(b, off); return err })
	}
	write(0, pattern(300<<10, 1))
	write(600<<10, pattern(5000, 2))
	views["s1"] = next
	op(nil, func() error { _, err := im.CreateSnapshot("s1"); return err })
	must["s1"] = true
	write(4096+100, pattern(9000, 3))
	write(200<<10, pattern(64<<10, 4))
	views["s2"] = next
	op(nil, func() error { _, err := im.CreateSnapshot("s2"); return err })
	must["s2"] = true
	write(0, pattern(4096, 5))
	op(views["s1"], func() error { return im.ApplySnapshot("s1") })
	delete(must, "s1")
	op(nil, func() error { return im.DeleteSnapshot("s1") })
	delete(views, "s1")
	write(8192, pattern(4096, 6))
	op(views["s2"], func() error { return im.ApplySnapshot("s2") })
	delete(must, "s2")
	op(nil, func() error { return im.DeleteSnapshot("s2") })
	delete(views, "s2")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return ops
}

// onlyCopied: every corruption Check reported is an OFLAG_COPIED error.
func onlyCopied(msgs []string) bool {
	for _, m := range msgs {
		if strings.HasPrefix(m, "ERROR") && !strings.HasPrefix(m, "ERROR OFLAG_COPIED") {
			return false
		}
	}
	return true
}

func verifySnapCrash(t *testing.T, k int, p snapCrashPoint) bool {
	t.Helper()
	im, ok := reopenCrash(t, k, p.dev, Options{})
	if im == nil {
		return ok
	}
	defer im.Close()
	// Leaks are allowed. A crash inside create, apply or delete may also
	// leave COPIED out of step with the refcounts (set on a cluster whose
	// increment outlived the crash, or missing where a count went back
	// to 1): qemu-img check counts those as corruptions too, and QEMU's
	// ordering leaves the same; check -r all repairs them in one pass
	// (leaks first, then COPIED against the repaired counts). Any other
	// corruption is never allowed, and after the repair the image must
	// be clean. The views are verified below.
	check := func(what string) bool {
		r, err := im.Check(CheckOptions{})
		if err == nil && r.CheckErrors == 0 && (r.Leaks != 0 || r.Corruptions != 0) && onlyCopied(r.Messages) {
			r, err = im.Check(CheckOptions{Repair: RepairAll})
			if err == nil {
				r, err = im.Check(CheckOptions{})
			}
		}
		if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 || r.Leaks != 0 {
			t.Errorf("crash point %d, %s: check: %v corruptions=%d errors=%d %v", k, what, err, r.Corruptions, r.CheckErrors, head(r.Messages, 5))
			return false
		}
		return true
	}
	if !check("reopened") {
		return false
	}
	got := testkit.ReadAll(t, im)
	for s := 0; s < len(got); s += crashSector {
		g := got[s : s+crashSector]
		if !bytes.Equal(g, p.prev[s:s+crashSector]) && !bytes.Equal(g, p.next[s:s+crashSector]) {
			t.Errorf("crash point %d: active view wrong at %d", k, s)
			return false
		}
	}
	have := map[string]bool{}
	for _, sn := range im.Snapshots() {
		have[sn.Name] = true
	}
	for name := range p.must {
		if !have[name] {
			t.Errorf("crash point %d: snapshot %s lost", k, name)
			return false
		}
	}
	for name := range have {
		want, ok := p.views[name]
		if !ok {
			t.Errorf("crash point %d: unexpected snapshot %s", k, name)
			return false
		}
		if err := im.ApplySnapshot(name); err != nil {
			t.Errorf("crash point %d: apply %s: %v", k, name, err)
			return false
		}
		if i := testkit.FirstDiff(testkit.ReadAll(t, im), want); i >= 0 {
			t.Errorf("crash point %d: snapshot %s differs at %d", k, name, i)
			return false
		}
		if !check("applied " + name) {
			return false
		}
	}
	return true
}
