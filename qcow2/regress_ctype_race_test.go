package qcow2

import (
	"bytes"
	"sync"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// Reads of compressed clusters looked the image's compression type up
// in the header without the image lock, while every header rewrite
// (here: the dirty bit's, through SetLazyRefcounts, and a snapshot
// table's) stores the whole header under it: a data race the race
// detector reports (run with -race). The type has a lock-free mirror
// now, as the version and size have.
func TestRegress_CompressedReadRacesHeaderWrite(t *testing.T) {
	const cs = 4096
	im, _ := memImage(t, CreateOptions{ClusterSize: cs, Size: 1 << 20, CompressionType: "zstd"}, Options{}, memdev.Options{})
	want := bytes.Repeat([]byte{1, 2, 3, 4, 0, 0, 0, 0}, cs/8)
	for c := int64(0); c < 4; c++ {
		if err := im.WriteCompressed(c*cs, want); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		got := make([]byte, cs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for c := int64(0); c < 4; c++ {
				if _, err := im.ReadAt(got, c*cs); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, want) {
					t.Error("compressed cluster reads wrong")
					return
				}
			}
		}
	})
	for i := range 20 {
		if err := im.SetLazyRefcounts(i%2 == 0); err != nil {
			t.Fatal(err)
		}
		if _, err := im.CreateSnapshot("s"); err != nil {
			t.Fatal(err)
		}
		if err := im.DeleteSnapshot("s"); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
