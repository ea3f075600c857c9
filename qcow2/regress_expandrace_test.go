package qcow2

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// ExpandZeroClusters maps a run of zero clusters (preallocated ones, or
// any with a backing file) and then writes zero buffers over the whole
// run through the write path, without looking again: a guest write
// into one of those clusters that was acknowledged after the map and
// before the zero buffers reached it is overwritten with zeros. The
// image is "safe for concurrent use" and the unallocating branch
// (unmapZeroCluster) re-checks under registration for exactly this
// reason; the zero-buffer branch does not.
// ExpandZeroClusters mapped a run of zero clusters once and then wrote
// zero buffers over the whole run through the write path: a guest write
// into the run acknowledged in between was overwritten with zeros. Each
// cluster is now expanded under its registration, if still zero.
func TestRegress_ExpandZeroClustersKeepsAckedWrite(t *testing.T) {
	const cs = 4096
	var blockOff atomic.Int64
	blockOff.Store(-1)
	im, entered, release := heldWriteImage(t, func(off, n int64) bool {
		return off == blockOff.Load() && blockOff.CompareAndSwap(off, -1)
	})
	defer im.Close()
	// Two adjacent preallocated zero clusters (a zeroing without unmap
	// keeps the host clusters): one run for ExpandZeroClusters.
	mustWrite(t, im, bytes.Repeat([]byte{1}, 2*cs), 0)
	if err := im.WriteZeroes(0, 2*cs, 0); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	e0, err := im.entry(0)
	e1, _ := im.entry(cs)
	im.mu.Unlock()
	if err != nil || e0.Type() != format.ClusterZeroAlloc || e1.Type() != format.ClusterZeroAlloc {
		t.Fatalf("setup: entries %v %v (%v)", e0.Type(), e1.Type(), err)
	}
	// Hold Expand's zero write into the first cluster.
	blockOff.Store(int64(e0.Offset()))
	done := make(chan error, 1)
	go func() { done <- im.ExpandZeroClusters() }()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("ExpandZeroClusters never wrote the first cluster")
	}
	// Expand has mapped [0, 2*cs) as zero clusters and is writing zeros
	// into cluster 0. A guest write into cluster 1 completes now.
	data := bytes.Repeat([]byte{0x5a}, 512)
	wdone := make(chan error, 1)
	go func() { _, err := im.WriteAt(data, cs+512); wdone <- err }()
	select {
	case err := <-wdone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the guest write into cluster 1 waited for ExpandZeroClusters")
	}
	got := make([]byte, 512)
	if _, err := im.ReadAt(got, cs+512); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("write not visible right after its ack: %#x %v", got[0], err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(got, cs+512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("a write acknowledged before ExpandZeroClusters reached its cluster reads %#x afterwards, want %#x: the expansion wrote zeros over it", got[0], data[0])
	}
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 {
		t.Errorf("check: %v %+v", err, r)
	}
}

// heldWriteImage is a new 1 MiB image of 4 KiB clusters on a memdev whose
// first write hold matches waits, once entered has received, until
// release is closed.
func heldWriteImage(t *testing.T, hold func(off, n int64) bool) (im *Image, entered, release chan struct{}) {
	t.Helper()
	entered, release = make(chan struct{}, 1), make(chan struct{})
	mem := memdev.New(memdev.Options{OnWrite: func(off, n int64) {
		if hold(off, n) {
			entered <- struct{}{}
			<-release
		}
	}})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: 4096, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return im, entered, release
}
