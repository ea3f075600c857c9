package qcow2

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/qring/qring/internal/testkit"
)

// Internal snapshots in the torture suite: an opSnap creates, applies or
// deletes one, and the model follows. Every configuration runs the same
// sequence, so snapshots meet every cluster size, refcount width,
// version, backing file, cache size, backend and the concurrent phases
// (writes into clusters a snapshot shares). Where a configuration cannot
// take a snapshot (a refcount would overflow its width) or apply one
// (version 2 images are not resized with snapshots, as in QEMU), the
// refusal must leave the image as it was, which the next comparison and
// check verify. At the end qemu-img reads every snapshot back.

// tsnap is a snapshot the model keeps: its name and the guest view when
// it was taken (its length is the disk size then).
type tsnap struct {
	name string
	data []byte
}

func (r *trun) snapshot(i int, o top) {
	im := r.im
	r.cmu.Lock()
	r.inSnap = true
	r.cmu.Unlock()
	defer func() {
		r.cmu.Lock()
		r.inSnap = false
		r.cmu.Unlock()
	}()
	what := fmt.Sprintf("op %d (%v)", i, o)
	switch o.n {
	case snapCreate:
		r.snapN++
		name := fmt.Sprintf("t%d", r.snapN)
		sn, err := im.CreateSnapshot(name)
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				r.fatalf("%s: %v", what, err)
			}
			// Refused (refcount overflow): nothing may have changed.
			r.st.SnapSkips++
			r.check(what + " refused: " + err.Error())
			return
		}
		if sn.DiskSize != uint64(r.size) {
			r.fatalf("%s: snapshot %s records disk size %d, want %d", what, name, sn.DiskSize, r.size)
		}
		r.st.Snapshots++
		r.snaps = append(r.snaps, tsnap{name, slices.Clone(r.model)})
	case snapApply:
		if len(r.snaps) == 0 {
			return
		}
		s := r.snaps[o.arg%len(r.snaps)]
		size := int64(len(s.data))
		// Until the next flush a crash may show the old view or the
		// snapshot's, cluster by cluster, at either size.
		r.touch(0, r.size)
		if err := im.ApplySnapshot(s.name); err != nil {
			if !errors.Is(err, ErrUnsupported) {
				r.fatalf("%s: apply %s: %v", what, s.name, err)
			}
			// Refused: a version 2 image is not resized with
			// snapshots, or a refcount would overflow its width
			// (the snapshot's counts go up before the old ones go
			// down, as in QEMU). The tables are as they were; the
			// resize to the snapshot's size, done first, may stay.
			r.st.SnapSkips++
			if sz, _ := im.Size(); sz != r.size {
				r.resizeModel(sz)
			}
			r.compareAll(what + " refused: " + err.Error())
			r.check(what + " refused")
			return
		}
		r.st.SnapApplies++
		// The model's arrays follow the size as growth and shrinking
		// keep them (resizeModel: every sector touched).
		r.resizeModel(size)
		r.cmu.Lock()
		copy(r.model, s.data)
		r.cmu.Unlock()
		if sz, _ := im.Size(); sz != size {
			r.fatalf("%s: size %d after applying %s, want %d", what, sz, s.name, size)
		}
		r.compareAll(what)
	case snapDelete:
		if len(r.snaps) == 0 {
			return
		}
		k := o.arg % len(r.snaps)
		if err := im.DeleteSnapshot(r.snaps[k].name); err != nil {
			r.fatalf("%s: delete %s: %v", what, r.snaps[k].name, err)
		}
		r.st.SnapDeletes++
		r.snaps = slices.Delete(r.snaps, k, k+1)
	}
}

// checkSnapshotsQemu reads every snapshot of the closed image at path
// through qemu-img convert -l and compares it with the model's view
// (qemu-img loads the snapshot's tables without its disk size).
func (r *trun) checkSnapshotsQemu(path string) {
	if !testkit.HaveQemu() || len(r.snaps) == 0 {
		return
	}
	raw := filepath.Join(r.dir, "snapshot.raw")
	defer os.Remove(raw)
	for _, s := range r.snaps {
		src := []string{"-f", "qcow2", path}
		if r.cfg.encrypted() {
			src = testkit.QemuSecretArgs(path, tortureLUKSPass)
		}
		args := append(append([]string{"convert", "-l", "snapshot.name=" + s.name}, src...), "-O", "raw", raw)
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			r.fatalf("qemu-img convert of snapshot %s: %v\n%s", s.name, err, out)
		}
		got, err := os.ReadFile(raw)
		if err != nil {
			r.fatalf("%v", err)
		}
		// qemu-img reads a snapshot at the image's current size:
		// what lies past the snapshot's own size reads as zeros.
		if int64(len(got)) != r.size {
			r.fatalf("snapshot %s through qemu-img: %d bytes, want the disk size %d", s.name, len(got), r.size)
		}
		want := make([]byte, len(got))
		copy(want, s.data)
		if k := testkit.FirstDiff(got, want); k >= 0 {
			r.fatalf("snapshot %s (disk size %d) through qemu-img: first difference at guest offset %#x: got %#x want %#x", s.name, len(s.data), k, got[k], want[k])
		}
	}
}

// resizeModel follows a resize the model did not ask for (an apply
// refused after it resized): zeros past the old end, as a growth reads.
func (r *trun) resizeModel(size int64) {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if size < r.size {
		r.model = r.model[:size]
		r.bmCut(size)
	} else {
		r.model = append(r.model, make([]byte, size-r.size)...)
	}
	r.flushed = append(r.flushed[:min(size, int64(len(r.flushed)))], make([]byte, max(0, size-int64(len(r.flushed))))...)
	r.touched = r.touched[:0]
	for range (size + crashSector - 1) / crashSector {
		r.touched = append(r.touched, true)
	}
	r.size = size
}
