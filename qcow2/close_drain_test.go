package qcow2

import (
	"math/rand/v2"
	"testing"
	"time"

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
