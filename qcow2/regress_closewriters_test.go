package qcow2

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/latdev"
	"github.com/qring/qring/block/memdev"
)

// Close with guest writers running (no queue): the writers that wait
// for Image.mu while holding a writers-gate token cannot leave the gate
// while Close holds mu and waits for that gate (image.go Close, then
// bitmaps.go storeBitmapsLocked). Both waits time out; Close returns an
// error and leaves the persistent bitmap IN_USE (unusable) on the media.
// Close waited for the writers in the gate holding mu, which an
// allocating write, a zeroing or a discard in the gate waits for: the
// wait timed out (2-3 s), Close failed, and every persistent bitmap was
// left in use (inconsistent for QEMU: the incremental backup chain
// broken). Close now waits without mu.
func TestRegress_CloseWithWritersStoresBitmaps(t *testing.T) {
	const cs, size = 4096, 1 << 20
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: size}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(latdev.New(mem, latdev.Model{PerOp: 30 * time.Microsecond}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.AddBitmap("b", 4096, true); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf := bytes.Repeat([]byte{byte(g + 1)}, 2048)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(size/cs) * cs
				var err error
				if rng.IntN(2) == 0 {
					_, err = im.WriteAt(buf, off) // allocating write
				} else {
					err = im.WriteZeroes(off, cs, block.MayUnmap)
				}
				if err != nil {
					return // ErrClosed once Close has run
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cerr := im.Close()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("Close took %v: %v", took, cerr)
	if cerr != nil {
		t.Errorf("Close: %v", cerr)
	}
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if err := im2.BitmapUsable("b"); err != nil {
		t.Errorf("after Close: %v", err)
	}
}
