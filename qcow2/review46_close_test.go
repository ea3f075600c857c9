package qcow2

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// r46StallDev holds the first Writev at off until release is closed,
// telling stalled when it is held.
type r46StallDev struct {
	*memdev.Dev
	off     int64
	stalled chan struct{}
	release chan struct{}
}

func (d *r46StallDev) Writev(off int64, b [][]byte) error {
	if off == d.off && d.stalled != nil {
		s := d.stalled
		d.stalled = nil
		close(s)
		<-d.release
	}
	return d.Dev.Writev(off, b)
}

// TestReview46_CloseWaitsForOverwrites: a write into an allocated cluster
// (the lock-free overwrite path) in flight when Close starts is either
// waited for by Close, and then durable after it, or refused; it is never
// acknowledged after Close's last flush, which would leave a write the
// caller was told succeeded out of the image after a power cut (QEMU
// drains every request before it closes). The write is held in the
// device past Close's wait for writers: Close returns, and the write must
// fail. (Should Close wait for it for ever, the write is let go after a
// while and the test passes.)
func TestReview46_CloseWaitsForOverwrites(t *testing.T) {
	t.Parallel()
	t.Run("write", func(t *testing.T) {
		t.Parallel()
		r46CloseRacing(t, func(im *Image, nw []byte) error { _, err := im.WriteAt(nw, 0); return err }, r46Data(3, 0, 4096))
	})
	t.Run("zeroes", func(t *testing.T) { // a partial cluster: zero buffers in place
		t.Parallel()
		r46CloseRacing(t, func(im *Image, nw []byte) error { return im.WriteZeroes(0, 512, 0) }, append(make([]byte, 512), r46Data(2, 0, 4096)[512:]...))
	})
}

// r46CloseRacing runs write (which must leave cluster 0 as nw) into an
// allocated cluster, holds its data in the device, and closes the image
// meanwhile. What is checked depends on what Close did, not on how long
// it took (a Close slowed past a fixed 2 s on a loaded machine had in
// fact given up on the write, which the test then required to succeed):
// if its wait for writers ran out (closeUnwaited), the write must fail
// or be durable; if it waited, the write must succeed; either way a
// write acknowledged is durable once Close has returned.
func r46CloseRacing(t *testing.T, write func(im *Image, nw []byte) error, nw []byte) {
	mem, d, im := r46StalledOverwrite(t, 100*time.Millisecond)
	old := r46Data(2, 0, 4096)
	stalled := d.stalled
	werr := make(chan error, 1)
	go func() { werr <- write(im, nw) }()
	<-stalled
	cerr := make(chan error, 1)
	go func() { cerr <- im.Close() }()
	var closeErr error
	closed := false
	select {
	case closeErr = <-cerr:
		closed = true // Close did not wait for the write
	case <-time.After(holdTimeout):
		// Close waits for the write (for ever, should it not give up),
		// or the machine is slow: let the write go either way.
	}
	close(d.release)
	writeErr := <-werr
	if !closed {
		select {
		case closeErr = <-cerr:
		case <-time.After(holdTimeout):
			t.Fatal("Close has not returned after the write it waited for")
		}
	}
	if closeErr != nil {
		t.Fatalf("close: %v", closeErr)
	}
	if !im.closeUnwaited.Load() && writeErr != nil {
		t.Fatalf("write: %v (Close waited for it)", writeErr)
	}
	if writeErr == nil {
		crash := mem.CrashClone(rand.New(rand.NewPCG(46, 2)), 0) // what a power cut now leaves
		// qemu-img check: leaks allowed, corruption never.
		if !qemuCheckCrash(t, 0, crash, Options{}, false) {
			t.FailNow()
		}
		cim, err := OpenDevice(crash, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer cim.Close()
		got := make([]byte, 4096)
		if _, err := cim.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if testkit.FirstDiff(got, nw) >= 0 {
			t.Fatalf("a write acknowledged, Close returned, is not durable (Close gave up on it: %v; the image still holds the old bytes: %v)", im.closeUnwaited.Load(), testkit.FirstDiff(got, old) < 0)
		}
	}
}

// r46StalledOverwrite opens a new 1 MiB image of 4 KiB clusters whose
// Close waits up to idleWait for writers, writes r46Data(2, 0, 4096) at
// 0 and flushes, and arms d to hold the next device write into that
// cluster (d.stalled is closed when it is held, d.release lets it go).
func r46StalledOverwrite(t *testing.T, idleWait time.Duration) (*memdev.Dev, *r46StallDev, *Image) {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	d := &r46StallDev{Dev: mem, off: -1}
	if err := CreateDevice(d, CreateOptions{Size: 1 << 20, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	im.idleWait = idleWait // how long Close waits for writers
	if _, err := im.WriteAt(r46Data(2, 0, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	e, err := im.entry(0)
	if err != nil {
		t.Fatal(err)
	}
	d.off = int64(e.Offset())
	d.stalled, d.release = make(chan struct{}), make(chan struct{})
	return mem, d, im
}
