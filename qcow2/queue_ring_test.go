package qcow2_test

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// TestQueue_Ring: an image's Queue over an io_uring File (O_DIRECT, and
// buffered) keeps the Queue contract (block A1-A6) with the File's own
// queue under it, and every image it wrote passes our Check and qemu-img
// check.
func TestQueue_Ring(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{true, false} {
		name := "buffered"
		if direct {
			name = "direct"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel() // its own files and ring
			opener := qcow2.Opener(uring.Opener(uring.Options{Direct: direct}))
			co := qcow2.CreateOptions{Size: 16 << 20, ClusterSize: 64 << 10, Opener: opener}
			o := qcow2.Options{Opener: opener, PreallocSize: 2 << 20, PreallocAlign: 1 << 20}
			paths := map[block.Device]string{}
			blocktest.RunQueue(t, func(t *testing.T) block.Device {
				path := filepath.Join(t.TempDir(), "img.qcow2")
				if err := qcow2.Create(path, co); err != nil {
					t.Fatal(err)
				}
				im, err := qcow2.Open(path, o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					im.Close()
					imgcheck.File(t, path, qcow2.Options{})
				})
				paths[im] = path
				return im
			}, blocktest.QueueConfig{Size: co.Size, Ops: 1500, Check: func(t *testing.T, d block.Device) {
				im := d.(*qcow2.Image)
				if m := im.Metrics(); m.QueueFast == 0 || m.QueueAlloc == 0 {
					t.Errorf("no request took the fast path, or none the allocator: %+v", m)
				}
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				imgcheck.File(t, paths[d], qcow2.Options{})
			}})
		})
	}
}
