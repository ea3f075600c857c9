package qcow2

import (
	"sync"
	"syscall"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// cloneOnWriteDev fails reserves past limit part-way (partialReserveDev)
// and, once armed, keeps a clone of the device after every write: the
// state a crash that kept every write so far leaves.
type cloneOnWriteDev struct {
	*memdev.Dev
	limit  int64
	mu     sync.Mutex
	failed bool
	clones []*memdev.Dev
	cuts   []int64
}

func (d *cloneOnWriteDev) WriteZeroes(off, n int64, flags block.Flags) error {
	if flags&block.Allocate != 0 && off+n > d.limit {
		if sz, _ := d.Dev.Size(); sz < d.limit && off < d.limit {
			d.Dev.Truncate(d.limit)
		}
		d.mu.Lock()
		d.failed = true
		d.mu.Unlock()
		return syscall.ENOSPC
	}
	return d.Dev.WriteZeroes(off, n, flags)
}

func (d *cloneOnWriteDev) Truncate(size int64) error {
	d.mu.Lock()
	if d.failed {
		d.cuts = append(d.cuts, size)
	}
	d.mu.Unlock()
	return d.Dev.Truncate(size)
}

func (d *cloneOnWriteDev) Writev(off int64, v [][]byte) error {
	err := d.Dev.Writev(off, v)
	d.mu.Lock()
	if d.failed && len(d.clones) < 400 {
		d.clones = append(d.clones, d.Dev.Clone())
	}
	d.mu.Unlock()
	return err
}

// TestReview_FailedReserveDuringPreallocResize: TruncatePrealloc with
// full grows the file over every cluster still to link
// (preallocateLocked) and caches that length; a reserve ahead that fails
// part-way in the middle and is cut back to the mark must not leave
// entries written back past the end of the file (preallocateLocked
// reads the size again before it trusts its cached end). Every state a
// crash after the failure leaves is checked.
func TestReview_FailedReserveDuringPreallocResize(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	d := &cloneOnWriteDev{Dev: mem, limit: 12 << 20}
	im, err := OpenDevice(d, Options{PreallocSize: 4 << 20, L2CacheSize: 8192, RefcountCacheSize: 8192})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.TruncatePrealloc(48<<20, PreallocFull); err != nil {
		t.Logf("TruncatePrealloc: %v", err)
	}
	t.Logf("cuts after the failed reserve: %v; %d clones", d.cuts, len(d.clones))
	bad := 0
	for i, c := range d.clones {
		ro, err := OpenDevice(c, Options{ReadOnly: true})
		if err != nil {
			t.Errorf("clone %d: open: %v", i, err)
			continue
		}
		r, err := ro.Check(CheckOptions{})
		ro.Close()
		if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
			if bad == 0 {
				sz, _ := c.Size()
				t.Errorf("clone %d (file %d bytes): %v, %d corruptions, %d errors: %v", i, sz, err, r.Corruptions, r.CheckErrors, head(r.Messages, 3))
				c.WriteFile("/tmp/h4/prealloc_cut.qcow2")
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d crash states corrupt", bad, len(d.clones))
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}
