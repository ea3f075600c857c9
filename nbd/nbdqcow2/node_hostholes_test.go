package nbdqcow2

import "testing"

// TestNodeHostHoles: a raw window over a qcow2 image whose metadata was
// preallocated (--image-opts driver=raw,offset=N,file.driver=qcow2,...)
// reports the clusters mapped over holes of the host file as zeros, as
// qemu-nbd does (the raw driver hands the query to the qcow2 node, which
// asks its file): nbdinfo --map shows "0 983040 2 zero; 983040 65536 0
// data; 1048576 3145728 2 zero" for a 4 MiB window at 64 KiB. Node called
// all of it data (Status applied HostHoles; Node did not).
func TestNodeHostHoles(t *testing.T) {
	s := Node{Image: preallocatedImage(t), Offset: 64 << 10}
	for _, c := range []struct {
		off, n int64
		zero   bool
	}{{0, 960 << 10, true}, {960 << 10, 64 << 10, false}, {1 << 20, 3 << 20, true}} {
		e, err := s.Extent(c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if e.Hole || e.Zero != c.zero || e.Depth != 1 || e.Len <= 0 || e.Len > c.n {
			t.Errorf("extent at %d: %+v, want hole=false zero=%v depth=1 within %d bytes", c.off, e, c.zero, c.n)
		}
	}
}
