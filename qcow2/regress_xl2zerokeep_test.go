package qcow2

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// The extended-L2 twin of TestRegress_ZeroKeptClusterWriteStaysZeroed:
// WriteZeroes of whole subclusters of a partial cluster
// (xzeroPartial -> tryZeroSubclusters) clears their allocation bits but
// keeps the host cluster, without waiting for lock-free writes that
// found those subclusters allocated. A later partial-subcluster write W2
// re-allocates the subcluster in the same host cluster (keep: COW of
// zeros, then link); the stale W1 landed in between and was resurrected,
// overwriting W2's own acknowledged data (review 53). The zeroing now
// waits for W1 (Q12).
func TestRegress_XL2ZeroSubclustersWaitForWriters(t *testing.T) {
	im, c, finish := heldQueuedW1(t, CreateOptions{Size: 4 << 20, ClusterSize: 64 << 10, ExtendedL2: true})
	zeroThenRewrite(t, im, c, 1024, func() error { return im.WriteZeroes(c, 8192, 0) }, finish) // subclusters 0-3
}

// The same through the synchronous path only (no queue): W1 is a
// WriteAt held at the device inside xoverwrite.
func TestRegress_XL2ZeroSubclustersWaitForWritersSync(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs, ExtendedL2: true}); err != nil {
		t.Fatal(err)
	}
	hd := newHoldFirstDev(mem)
	im, err := OpenDevice(hd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	const C = 2 * cs
	finish := hd.holdW1(t, im, C)
	zeroThenRewrite(t, im, C, 1024, func() error { return im.WriteZeroes(C, 8192, 0) }, finish)
}

// On an extended-L2 image with an external data file, a zeroing (no
// unmap) of guest cluster 0 keeps it (allocated at host offset 0, DF2),
// but xzeroClusterLocked set fr.kept only for e.Offset() != 0, so the
// zeroing did not wait for writes that found the cluster Normal (Q12;
// review 53). Guest cluster 1 (host offset != 0) is the control.
func TestRegress_XL2DataFileCluster0ZeroWaitsForWriters(t *testing.T) {
	const cs = 64 << 10
	for _, c := range []int64{0, 1} {
		t.Run(fmt.Sprintf("cluster%d", c), func(t *testing.T) {
			img, data := dfMemImage(t, CreateOptions{Size: 1 << 20, ClusterSize: cs, ExtendedL2: true}, false)
			hd := newHoldFirstDev(data)
			im, err := OpenDevice(img, Options{DataDevice: hd})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			C := c * cs
			finish := hd.holdW1(t, im, C) // in place, in the gate, held at the data file
			zeroThenRewrite(t, im, C, 1024, func() error { return im.WriteZeroes(C, cs, 0) }, finish)
		})
	}
}

// zeroThenRewrite is what these regressions share. W1, a write of 0xa1
// into [c, c+4096) that found its cluster allocated, is held at the
// device; zero runs meanwhile, and if it has not returned after a while
// (it waits for W1, Q12) finish lets W1 complete. Then W2, 512 bytes at
// c+1024 into the same (re-allocated) subcluster, stops before its
// link; W1 completes if it had not; [c, c+4096) is read (r1), and W2
// links. The range must read r1 with W2's bytes over it: not W1's bytes
// brought back by W2's link.
func zeroThenRewrite(t *testing.T, im *Image, c, w2off int64, zero func() error, finish func()) {
	t.Helper()
	zdone := make(chan error, 1)
	go func() { zdone <- zero() }()
	released := false
	select {
	case err := <-zdone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(300 * time.Millisecond):
		finish()
		released = true
		if err := <-zdone; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("zeroing returned before W1 landed: %v", !released)
	var once sync.Once
	inLink := make(chan struct{})
	relLink := make(chan struct{})
	im.linkFault = func() error {
		once.Do(func() { close(inLink); <-relLink })
		return nil
	}
	w2data := bytes.Repeat([]byte{0xb2}, 512)
	w2 := make(chan error, 1)
	go func() { _, err := im.WriteAt(w2data, c+w2off); w2 <- err }()
	select {
	case <-inLink:
	case <-time.After(5 * time.Second):
		t.Fatal("W2 did not reach its link")
	}
	if !released {
		finish()
	}
	r1 := make([]byte, 4096)
	if err := im.Readv(c, [][]byte{r1}); err != nil {
		t.Fatal(err)
	}
	close(relLink)
	if err := <-w2; err != nil {
		t.Fatal(err)
	}
	im.linkFault = nil
	r2 := readBack(t, im, c, 4096)
	want := bytes.Clone(r1)
	if w2off < int64(len(want)) {
		copy(want[w2off:], w2data)
	}
	t.Logf("after W1's ack: %#x..., after W2's link: %#x...", r1[:4], r2[:4])
	if i := testkit.FirstDiff(r2, want); i >= 0 {
		t.Errorf("after W2 (acknowledged, issued after the zeroing returned and W1 was acknowledged): byte %d reads %#x, want %#x (W1's bytes brought back)", i, r2[i], want[i])
	}
}

// holdFirstDev holds the first Writev whose first byte is 0xa1 once armed.
type holdFirstDev struct {
	*memdev.Dev
	arm     atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newHoldFirstDev(d *memdev.Dev) *holdFirstDev {
	return &holdFirstDev{Dev: d, entered: make(chan struct{}), release: make(chan struct{})}
}

func (d *holdFirstDev) Writev(off int64, v [][]byte) error {
	if len(v) > 0 && len(v[0]) > 0 && v[0][0] == 0xa1 && d.arm.CompareAndSwap(true, false) {
		close(d.entered)
		<-d.release
	}
	return d.Dev.Writev(off, v)
}
func (d *holdFirstDev) Close() error { return nil }

// holdW1 writes cluster c of im whole and flushes, then starts W1 (0xa1
// into its first 4 KiB) and returns once W1 is held at d; the function
// returned lets W1 complete and checks it.
func (d *holdFirstDev) holdW1(t *testing.T, im *Image, c int64) func() {
	t.Helper()
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, int(im.g.ClusterSize)), c)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	d.arm.Store(true)
	w1 := make(chan error, 1)
	go func() { _, err := im.WriteAt(bytes.Repeat([]byte{0xa1}, 4096), c); w1 <- err }()
	<-d.entered
	return func() {
		close(d.release)
		if err := <-w1; err != nil {
			t.Fatal(err)
		}
	}
}
