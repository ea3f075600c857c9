package qcow2

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
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
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs, ExtendedL2: true}); err != nil {
		t.Fatal(err)
	}
	g := newHeldWrites(mem)
	im, err := OpenDevice(zeroKeepDev{mem, g}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	const C = 2 * cs
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), C)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	w1 := &block.Req{Op: block.OpWrite, Off: C, Buf: bytes.Repeat([]byte{0xa1}, 4096)}
	if err := q.Submit(w1); err != nil {
		t.Fatal(err)
	}
	g.waitSeen(t, 1) // W1 on the fast path, held at the device
	zdone := make(chan error, 1)
	go func() { zdone <- im.WriteZeroes(C, 8192, 0) }() // subclusters 0-3 of C
	released := false
	select {
	case err := <-zdone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(200 * time.Millisecond):
		g.release(g.heldOff(0))
		released = true
		waitDone(t, q, w1)
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
	go func() { _, err := im.WriteAt(w2data, C+1024); w2 <- err }()
	select {
	case <-inLink:
	case <-time.After(5 * time.Second):
		t.Fatal("W2 did not reach its link")
	}
	if !released {
		g.release(g.heldOff(0))
		waitDone(t, q, w1)
	}
	r1 := make([]byte, 4096)
	if err := im.Readv(C, [][]byte{r1}); err != nil {
		t.Fatal(err)
	}
	close(relLink)
	if err := <-w2; err != nil {
		t.Fatal(err)
	}
	im.linkFault = nil
	r2 := readBack(t, im, C, 4096)
	t.Logf("after W1's ack: %#x..., after W2's link: [0]=%#x [1024]=%#x [3000]=%#x", r1[:4], r2[0], r2[1024], r2[3000])
	want := make([]byte, 4096)
	copy(want, r1)
	copy(want[1024:], w2data)
	if !bytes.Equal(r2, want) {
		t.Errorf("W1's range changed by an unrelated later write W2; W2's own bytes read %#x (want 0xb2)", r2[1024])
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// The same through the synchronous path only (no queue): W1 is a
// WriteAt held at the device inside xoverwrite.
func TestRegress_XL2ZeroSubclustersWaitForWritersSync(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs, ExtendedL2: true}); err != nil {
		t.Fatal(err)
	}
	hd := &holdFirstDev{Dev: mem, entered: make(chan struct{}), release: make(chan struct{})}
	im, err := OpenDevice(hd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	const C = 2 * cs
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), C)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	hd.arm.Store(true)
	w1 := make(chan error, 1)
	go func() { _, err := im.WriteAt(bytes.Repeat([]byte{0xa1}, 4096), C); w1 <- err }()
	<-hd.entered
	zdone := make(chan error, 1)
	go func() { zdone <- im.WriteZeroes(C, 8192, 0) }()
	released := false
	select {
	case err := <-zdone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(300 * time.Millisecond):
		close(hd.release)
		released = true
		if err := <-w1; err != nil {
			t.Fatal(err)
		}
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
	go func() { _, err := im.WriteAt(w2data, C+1024); w2 <- err }()
	select {
	case <-inLink:
	case <-time.After(5 * time.Second):
		t.Fatal("W2 did not reach its link")
	}
	if !released {
		close(hd.release)
		if err := <-w1; err != nil {
			t.Fatal(err)
		}
	}
	r1 := make([]byte, 4096)
	if err := im.Readv(C, [][]byte{r1}); err != nil {
		t.Fatal(err)
	}
	close(relLink)
	if err := <-w2; err != nil {
		t.Fatal(err)
	}
	im.linkFault = nil
	r2 := readBack(t, im, C, 4096)
	want := bytes.Clone(r1)
	copy(want[1024:], w2data)
	t.Logf("after W1's ack: %#x..., after W2: [0]=%#x [1024]=%#x", r1[:2], r2[0], r2[1024])
	if !bytes.Equal(r2, want) {
		t.Errorf("W2's own bytes read %#x (want 0xb2), byte 0 reads %#x (want %#x)", r2[1024], r2[0], r1[0])
	}
}

// holdFirstDev holds the first Writev whose first byte is 0xa1 once armed.
type holdFirstDev struct {
	*memdev.Dev
	arm     atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (d *holdFirstDev) Writev(off int64, v [][]byte) error {
	if len(v) > 0 && len(v[0]) > 0 && v[0][0] == 0xa1 && d.arm.CompareAndSwap(true, false) {
		close(d.entered)
		<-d.release
	}
	return d.Dev.Writev(off, v)
}
func (d *holdFirstDev) Close() error { return nil }

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
			hd := &holdFirstDev{Dev: data, entered: make(chan struct{}), release: make(chan struct{})}
			im, err := OpenDevice(img, Options{DataDevice: hd})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			C := c * cs
			mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), C)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			hd.arm.Store(true)
			w1 := make(chan error, 1)
			go func() { _, err := im.WriteAt(bytes.Repeat([]byte{0xa1}, 4096), C); w1 <- err }()
			<-hd.entered // W1 in place, in the gate, held at the data file
			zdone := make(chan error, 1)
			go func() { zdone <- im.WriteZeroes(C, cs, 0) }()
			released := false
			select {
			case err := <-zdone:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(300 * time.Millisecond): // waits for W1 (Q12)
				close(hd.release)
				released = true
				if err := <-w1; err != nil {
					t.Fatal(err)
				}
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
			go func() { _, err := im.WriteAt(w2data, C+1024); w2 <- err }()
			select {
			case <-inLink:
			case <-time.After(5 * time.Second):
				t.Fatal("W2 did not reach its link")
			}
			if !released {
				close(hd.release)
				if err := <-w1; err != nil {
					t.Fatal(err)
				}
			}
			r1 := make([]byte, 4096)
			if err := im.Readv(C, [][]byte{r1}); err != nil {
				t.Fatal(err)
			}
			close(relLink)
			if err := <-w2; err != nil {
				t.Fatal(err)
			}
			im.linkFault = nil
			r2 := readBack(t, im, C, 4096)
			want := bytes.Clone(r1)
			copy(want[1024:], w2data)
			t.Logf("after W1's ack %#x..., after W2: [0]=%#x [1024]=%#x", r1[:2], r2[0], r2[1024])
			if !bytes.Equal(r2, want) {
				t.Errorf("after W2 (acknowledged, issued after the zeroing returned and W1 was acknowledged), cluster %d byte 1024 reads %#x, want 0xb2; byte 0 reads %#x, want %#x", c, r2[1024], r2[0], r1[0])
			}
		})
	}
}
