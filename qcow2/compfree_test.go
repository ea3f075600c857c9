package qcow2

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// Tests of Image.compFree, where the next compressed stream may start
// inside a host cluster earlier streams partly fill (allocBytesLocked).
// Each frees or reassigns that host cluster through one operation, then
// hands free clusters out whole (normal writes) and writes compressed
// again: a stream appended at a stale compFree would land in a data
// cluster. Every guest cluster written must read back, and the image must
// check clean with our Check and qemu-img check (checkClean).

const compFreeCS = 4096

// compFreeImage is a 1 MiB zlib image on a memdev with 4 KiB clusters.
func compFreeImage(t *testing.T) (*Image, *memdev.Dev) {
	t.Helper()
	return compFreeImageOn(t, memdev.Options{})
}

func compFreeImageOn(t *testing.T, o memdev.Options) (*Image, *memdev.Dev) {
	t.Helper()
	mem := memdev.New(o)
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: compFreeCS, CompressionType: "zlib"}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return im, mem
}

// compFreeModel is what each written guest cluster must read back.
type compFreeModel map[int64][]byte

func (m compFreeModel) compressed(t *testing.T, im *Image, gc int64, seed byte) {
	t.Helper()
	p := compressible(compFreeCS, seed)
	if err := im.WriteCompressed(gc*compFreeCS, p); err != nil {
		t.Fatalf("compressed write of guest cluster %d: %v", gc, err)
	}
	e, _ := im.entry(guestOff(gc * compFreeCS))
	if e.Type() != format.ClusterCompressed {
		t.Fatalf("guest cluster %d: not compressed (%v)", gc, e.Type())
	}
	m[gc] = p
}

func (m compFreeModel) normal(t *testing.T, im *Image, gc int64, seed byte) {
	t.Helper()
	p := pattern(compFreeCS, seed)
	mustWrite(t, im, p, gc*compFreeCS)
	m[gc] = p
}

func (m compFreeModel) discard(t *testing.T, im *Image, gc int64) {
	t.Helper()
	if err := im.Discard(gc*compFreeCS, compFreeCS); err != nil {
		t.Fatal(err)
	}
	delete(m, gc)
}

func (m compFreeModel) verify(t *testing.T, im *Image) {
	t.Helper()
	got := make([]byte, compFreeCS)
	for gc, want := range m {
		if _, err := im.ReadAt(got, gc*compFreeCS); err != nil {
			t.Errorf("guest cluster %d: %v", gc, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("guest cluster %d reads back other bytes", gc)
		}
	}
}

// compFreeHost is the host cluster of guest cluster gc's entry.
func compFreeHost(t *testing.T, im *Image, gc int64) uint64 {
	t.Helper()
	e, err := im.entry(guestOff(gc * compFreeCS))
	if err != nil {
		t.Fatal(err)
	}
	if e.Type() == format.ClusterCompressed {
		return im.g.HostCluster(e.DecodeCompressed(&im.g).Off)
	}
	return im.g.HostCluster(e.Offset())
}

// addRef changes the refcount of host cluster c by delta behind every
// mapping: a leaked reference (+1, what a compressed write leaves when
// its link and the give-back both fail) or a lost one (-1).
func addRef(t *testing.T, im *Image, c uint64, delta int64) {
	t.Helper()
	im.mu.Lock()
	defer im.mu.Unlock()
	for {
		err := im.updateRefcountLocked(c, delta)
		if err == errRetry {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

// compFreeFinish writes normal clusters until the free clusters below the
// end of the file are handed out, then compressed clusters, then verifies
// everything and checks the image clean. freed, unless 0, is the host
// cluster compFree pointed into, which the operation freed: one of the
// normal writes must take it (else the test did not test anything).
func compFreeFinish(t *testing.T, im *Image, mem *memdev.Dev, m compFreeModel, freed uint64) {
	t.Helper()
	reused := false
	for k := int64(0); k < 16; k++ {
		m.normal(t, im, 100+k, byte(10+k))
		reused = reused || compFreeHost(t, im, 100+k) == freed
	}
	if freed != 0 && !reused {
		t.Fatalf("host cluster %d, freed, not handed out to a normal write", freed)
	}
	for k := int64(0); k < 4; k++ {
		m.compressed(t, im, 200+k, byte(40+k))
	}
	m.verify(t, im)
	checkClean(t, im, mem)
}

// Hypothesis: a discard drops the last reference of the host cluster
// compFree points into and the allocator hands it out whole, while
// compFree still points into it. Refuted: updateRefcountLocked resets
// compFree when that cluster's refcount reaches 0.
func TestCompFree_DiscardFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	m.discard(t, im, 0)
	if im.compFree != 0 {
		t.Errorf("compFree %#x kept after its cluster was freed", im.compFree)
	}
	if err := im.Flush(); err != nil { // releases the held cluster (Q13)
		t.Fatal(err)
	}
	compFreeFinish(t, im, mem, m, c)
}

// Hypothesis: as above, with the guest cluster overwritten (the write
// replaces the compressed entry and frees its stream).
func TestCompFree_OverwriteFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	m.normal(t, im, 0, 2)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	compFreeFinish(t, im, mem, m, c)
}

// Hypothesis: check -r leaks frees the cluster compFree points into when
// only a leaked reference kept it (its stream discarded). Refuted: the
// leak repair goes through updateRefcountLocked (applyFixes).
func TestCompFree_RepairLeaksFreesStreamCluster(t *testing.T) {
	t.Parallel()
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			t.Parallel()
			im, mem := compFreeImage(t)
			m := compFreeModel{}
			m.compressed(t, im, 0, 1)
			c := compFreeHost(t, im, 0)
			addRef(t, im, c, +1)
			m.discard(t, im, 0)
			r, err := im.Check(CheckOptions{Repair: mode})
			if err != nil {
				t.Fatal(err)
			}
			if r.LeaksFixed != 1 || !r.Clean() {
				t.Fatalf("repair: %+v", r)
			}
			compFreeFinish(t, im, mem, m, c)
		})
	}
}

// Hypothesis: check -r all rebuilds the refcount structures (a referenced
// cluster with refcount 0 makes it: compare_refcounts' rebuild) from the
// mapping, so a cluster that only a leaked reference kept is free in the
// new structures at once, never through updateRefcountLocked: compFree
// kept pointing into it, the next normal write took it whole, and the
// next compressed stream was appended over that write's data.
func TestCompFree_RebuildFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	m.normal(t, im, 1, 2)
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	addRef(t, im, c, +1) // leaked
	m.discard(t, im, 0)
	addRef(t, im, compFreeHost(t, im, 1), -1) // in use, counted free
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Fatalf("repair: %+v", r)
	}
	if slices.Contains(im.reftable, im.g.HostClusterOff(c)) {
		// The rebuild placed a refcount block there, as QEMU's takes
		// the first free cluster: no write gets it, and the streams
		// must not go over the refcounts (checkClean).
		c = 0
	}
	compFreeFinish(t, im, mem, m, c)
}

// Hypothesis: as above on a device of fixed size, where the rebuilt
// structures go into the first run of unreferenced clusters: the cluster
// only a leaked reference kept, compFree's, took a new refcount block,
// and the next compressed stream was appended over the refcounts.
func TestCompFree_RebuildFixedFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImageOn(t, memdev.Options{Fixed: true})
	m := compFreeModel{}
	m.normal(t, im, 1, 2)
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	m.normal(t, im, 2, 3)
	if d := compFreeHost(t, im, 2); d != c+1 {
		t.Fatalf("guest cluster 2 at host cluster %d, not right after the stream's %d", d, c)
	}
	addRef(t, im, c, +1) // leaked
	m.discard(t, im, 0)
	m.discard(t, im, 2)
	if err := im.Flush(); err != nil { // releases c+1 (Q12)
		t.Fatal(err)
	}
	addRef(t, im, compFreeHost(t, im, 1), -1) // in use, counted free
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Fatalf("repair: %+v", r)
	}
	if !slices.Contains(im.reftable, im.g.HostClusterOff(c)) {
		t.Fatalf("the rebuilt refcount block is not at host cluster %d (table %v)", c, im.reftable)
	}
	compFreeFinish(t, im, mem, m, 0)
}

// Hypothesis: a snapshot delete drops the last reference of the stream
// cluster (the active image discarded it) with compFree still in it.
// Refuted: DeleteSnapshot frees through updateRefcountLocked.
func TestCompFree_DeleteSnapshotFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	m.discard(t, im, 0)
	if err := im.DeleteSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	compFreeFinish(t, im, mem, m, c)
}

// Hypothesis: MakeEmpty frees every stream cluster with compFree kept.
func TestCompFree_MakeEmptyFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	m.normal(t, im, 1, 2)
	if err := im.MakeEmpty(); err != nil {
		t.Fatal(err)
	}
	clear(m)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	compFreeFinish(t, im, mem, m, c)
}

// Hypothesis: Shrink drops the compressed clusters past the new end and
// the file is cut (or the cluster handed out again) with compFree kept.
func TestCompFree_ShrinkFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	const last = (1 << 20) / compFreeCS // guest clusters
	m.compressed(t, im, last-1, 1)
	if err := im.Shrink((last - 4) * compFreeCS); err != nil {
		t.Fatal(err)
	}
	delete(m, last-1)
	if err := im.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	compFreeFinish(t, im, mem, m, 0)
}

// Hypothesis: an amend of refcount_bits rebuilds the refcounts and frees
// or moves the stream cluster with compFree kept. Refuted: the rebuild
// keeps the stored counts (the stream cluster stays referenced), and a
// width where the cluster's count is the maximum makes allocBytesLocked
// start a new cluster.
func TestCompFree_RefcountBitsKeepsStreamCluster(t *testing.T) {
	t.Parallel()
	for _, bits := range []uint32{1, 8, 64} {
		t.Run(fmt.Sprint(bits), func(t *testing.T) {
			t.Parallel()
			im, mem := compFreeImage(t)
			m := compFreeModel{}
			m.compressed(t, im, 0, 1)
			if err := im.SetRefcountBits(bits); err != nil {
				t.Fatal(err)
			}
			m.compressed(t, im, 1, 2)
			m.discard(t, im, 0)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			compFreeFinish(t, im, mem, m, 0)
		})
	}
}

// Hypothesis: applying a snapshot drops the active image's references,
// the last one of the stream cluster compFree points into among them.
// Refuted: ApplySnapshot frees through updateRefcountLocked.
func TestCompFree_ApplySnapshotFreesStreamCluster(t *testing.T) {
	t.Parallel()
	im, mem := compFreeImage(t)
	m := compFreeModel{}
	m.normal(t, im, 1, 2)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	m.compressed(t, im, 0, 1)
	c := compFreeHost(t, im, 0)
	if err := im.ApplySnapshot("s"); err != nil {
		t.Fatal(err)
	}
	delete(m, 0)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	compFreeFinish(t, im, mem, m, c)
}

// Hypothesis: the repair a writable open runs on a dirty image with lazy
// refcounts (a Check -r all) frees or moves stream clusters with a
// compFree kept. Refuted: compFree lives in memory only and starts at 0
// with each open, before that repair.
func TestCompFree_DirtyLazyReopen(t *testing.T) {
	t.Parallel()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: compFreeCS, CompressionType: "zlib", LazyRefcounts: true}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := compFreeModel{}
	m.compressed(t, im, 0, 1)
	m.compressed(t, im, 1, 2)
	m.normal(t, im, 2, 3)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	if !im.dirtySet {
		t.Fatal("the dirty bit is not set")
	}
	clone := mem.Clone() // as after a crash: dirty, refcounts maybe stale
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im2, err := OpenDevice(clone, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if im2.compFree != 0 {
		t.Fatalf("compFree %#x after the open's repair", im2.compFree)
	}
	m.compressed(t, im2, 3, 4)
	m.discard(t, im2, 0)
	m.discard(t, im2, 1)
	if err := im2.Flush(); err != nil {
		t.Fatal(err)
	}
	compFreeFinish(t, im2, clone, m, 0)
}
