package qcow2

import (
	"bytes"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"

	"github.com/qring/qring/internal/testkit"
)

// TestClose_WaitedWritesSucceed: a write in place that is in flight when
// Close begins, and lands while Close waits for the writers, is covered
// by Close's flush: it succeeds, as QEMU's drain lets it, and is durable
// after Close (TestReview46_CloseWaitsForOverwrites holds one past the
// wait instead: it must fail). Close's wait is made long, so whenever the
// held write is let go, the wait covers it.
func TestClose_WaitedWritesSucceed(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		write func(im *Image) error
		want  []byte
	}{
		{"write", func(im *Image) error { _, err := im.WriteAt(r46Data(3, 0, 4096), 0); return err }, r46Data(3, 0, 4096)},
		{"zeroes", func(im *Image) error { return im.WriteZeroes(0, 512, 0) }, append(make([]byte, 512), r46Data(2, 0, 4096)[512:]...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			mem, d, im := r46StalledOverwrite(t, time.Hour)
			stalled := d.stalled
			werr := make(chan error, 1)
			go func() { werr <- c.write(im) }()
			<-stalled
			cerr := make(chan error, 1)
			go func() { cerr <- im.Close() }()
			time.Sleep(20 * time.Millisecond) // Close on its way or waiting: either way its wait covers the write
			close(d.release)
			if err := <-werr; err != nil {
				t.Fatalf("a write Close waited for: %v", err)
			}
			if err := <-cerr; err != nil {
				t.Fatalf("close: %v", err)
			}
			crash := mem.CrashClone(rand.New(rand.NewPCG(46, 3)), 0) // only what is durable
			cim, err := OpenDevice(crash, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer cim.Close()
			got := make([]byte, 4096)
			if _, err := cim.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if k := testkit.FirstDiff(got, c.want); k >= 0 {
				t.Fatalf("the write Close waited for is not durable after Close: first difference at %d", k)
			}
		})
	}
}

// slowOnceDev delays the first device write that starts with head (the
// guest's data, not the metadata written under the image's lock) after
// armed is set, by delay.
type slowOnceDev struct {
	*memdev.Dev
	head    []byte
	armed   atomic.Bool
	delay   time.Duration
	stalled chan struct{}
}

func (d *slowOnceDev) Writev(off int64, b [][]byte) error {
	if len(b) > 0 && bytes.HasPrefix(b[0], d.head) && d.armed.CompareAndSwap(true, false) {
		close(d.stalled)
		time.Sleep(d.delay)
	}
	return d.Dev.Writev(off, b)
}

// TestClose_WaitsForSlowAllocation: an allocating write whose device
// request takes longer than a second (a loaded disk, a network file
// system) while Close runs is waited for, as QEMU's drain waits: the
// write succeeds and the image is clean after Close. Close gave up after
// a second: the write failed with ErrClosed and its cluster leaked, in
// an image Close had closed without an error.
func TestClose_WaitsForSlowAllocation(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		n    int
	}{{"cluster", 4096}, {"run", 256 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			mem := memdev.New(memdev.Options{})
			data := r46Data(5, 0, c.n)
			d := &slowOnceDev{Dev: mem, head: data[:64], delay: 2500 * time.Millisecond, stalled: make(chan struct{})}
			if err := CreateDevice(d, CreateOptions{Size: 4 << 20, ClusterSize: 65536}); err != nil {
				t.Fatal(err)
			}
			im, err := OpenDevice(d, Options{Prealloc: PreallocOff})
			if err != nil {
				t.Fatal(err)
			}
			d.armed.Store(true)
			werr := make(chan error, 1)
			go func() { _, err := im.WriteAt(data, 1<<20); werr <- err }()
			<-d.stalled
			if err := im.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("the write Close should have waited for: %v", err)
			}
			im2, err := OpenDevice(mem.CrashClone(rand.New(rand.NewPCG(5, 1)), 0), Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im2.Close()
			r, err := im2.Check(CheckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Corruptions != 0 || r.Leaks != 0 {
				t.Fatalf("after Close: %d corruptions, %d leaked clusters", r.Corruptions, r.Leaks)
			}
			got := make([]byte, c.n)
			if _, err := im2.ReadAt(got, 1<<20); err != nil {
				t.Fatal(err)
			}
			if k := testkit.FirstDiff(got, data); k >= 0 {
				t.Fatalf("the write is not durable after Close: first difference at %d", k)
			}
		})
	}
}
