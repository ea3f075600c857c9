package qcow2

import (
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// readHookDev calls hook (if set) before every read.
type readHookDev struct {
	block.Device
	hook atomic.Pointer[func(off int64)]
}

func (d *readHookDev) Readv(off int64, bufs [][]byte) error {
	if h := d.hook.Load(); h != nil {
		(*h)(off)
	}
	return d.Device.Readv(off, bufs)
}

// TestCacheReview_ReftableGrowthConcurrentWriteBack: growReftable fills
// the new refcount blocks (the counts of the new table's clusters) after
// it marked them dirty, without their table locks. A write-back of the
// refcount cache by another goroutine in between (an L2 eviction flushing
// its refcount dependency, from a lock-free lookup) snapshots a block
// before its counts are in and marks it clean; the counts set after
// that are never written: the new table names a block whose counts of
// the table's own clusters are 0 on the media (and in memory once the
// clean block is evicted and reread), so those clusters look free.
//
// The other goroutine's write-back runs from a read hook here, at the
// moment growReftable loads the existing block that counts the first
// new cluster, which is deterministic.
func TestCacheReview_ReftableGrowthConcurrentWriteBack(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "t.qcow2")
	if err := Create(p, CreateOptions{Size: 64 << 20, ClusterSize: 512, RefcountBits: 64}); err != nil {
		t.Fatal(err)
	}
	var hd *readHookDev
	o := Options{
		L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 512,
		Opener: func(path string, ro bool) (block.Device, error) {
			d, err := DefaultOpener(path, ro)
			if err != nil {
				return nil, err
			}
			hd = &readHookDev{Device: d}
			return hd, nil
		},
	}
	im, err := Open(p, o)
	if err != nil {
		t.Fatal(err)
	}
	g := im.Geometry()
	cs := int64(g.ClusterSize)
	per := cs / 8 // refcount entries per block (64-bit counts), reftable entries per cluster
	// Allocate until the next cluster is the last of a range that has a
	// block, so that the area of a doubled table (its new block, then 2
	// or more table clusters) starts there and runs into a range with no
	// block: its first cluster is counted in the existing block, the
	// rest in the new one.
	buf := pattern(int(cs), 3)
	for i := int64(0); ; i++ {
		a := int64(im.space.mark()) / cs
		if a%per == per-1 {
			break
		}
		if i > 4*per {
			t.Fatal("no suitable high-water mark")
		}
		if _, err := im.WriteAt(buf, i*cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im.rbc.Invalidate() // the existing block is read again below
	rbOff := int64(im.reftable[(int64(im.space.mark())/cs)/per])
	if rbOff == 0 {
		t.Fatal("the high-water mark's range has no block")
	}
	var fired atomic.Bool
	hook := func(off int64) {
		if off == rbOff && !fired.Swap(true) {
			// Another goroutine's write-back of the refcount cache, as an
			// L2 eviction's dependency flush does.
			if err := im.rbc.Write(); err != nil {
				t.Error(err)
			}
		}
	}
	hd.hook.Store(&hook)
	im.mu.Lock()
	err = im.growReftable(uint64(len(im.reftable)))
	im.mu.Unlock()
	hd.hook.Store(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !fired.Load() {
		t.Fatal("the hook did not run: the test no longer reaches the window")
	}
	if im.Metrics().ReftableGrowths == 0 {
		t.Fatal("no growth")
	}
	closeCheck(t, im, p)
}
