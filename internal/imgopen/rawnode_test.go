package imgopen

import "testing"

// TestRawNode: raw windows over a qcow2 node (one, two, with a fixed size,
// the node under a file node or a file name) lead to the node's image at
// the windows' summed offset, and a qcow2 root to its image at 0; a raw
// window over a host file and a throttle between the window and the node
// lead to none (the first has the host file's status, the second is not
// QEMU's raw pass-through).
func TestRawNode(t *testing.T) {
	dir := t.TempDir()
	img := mkQcow2(t, dir, "a.qcow2", 4<<20)
	raw := mkRaw(t, dir, "a.raw", 1<<20)
	for _, c := range []struct {
		spec  string
		image bool
		off   int64
	}{
		{"driver=raw,file.driver=qcow2,file.file.filename=" + img, true, 0},
		{"driver=raw,offset=64k,size=1M,file.driver=qcow2,file.file.driver=file,file.file.filename=" + img, true, 64 << 10},
		{"driver=raw,offset=64k,file.driver=raw,file.offset=512,file.file.driver=qcow2,file.file.file.filename=" + img, true, 64<<10 + 512},
		{"driver=raw,offset=64k,file.filename=" + raw, false, 0},
		{"driver=raw,file.driver=throttle,file.file.driver=qcow2,file.file.file.filename=" + img, false, 0},
		{"driver=qcow2,file.filename=" + img, true, 0},
	} {
		o, err := OpenSpec(c.spec, Spec{AIO: "threads", ReadOnly: true})
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		im, off := RawNode(o.Dev)
		if (im != nil) != c.image || off != c.off {
			t.Errorf("%s: RawNode = %v, %d; want image %v at %d", c.spec, im != nil, off, c.image, c.off)
		}
		o.Close()
	}
}
