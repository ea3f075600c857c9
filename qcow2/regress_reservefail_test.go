package qcow2

import (
	"syscall"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// partialReserveDev fails every reserve (WriteZeroes with Allocate)
// that reaches past limit with ENOSPC, after growing the file over the
// part below limit, as ext4's ZERO_RANGE does when it runs out of space.
type partialReserveDev struct {
	*memdev.Dev
	limit int64
}

func (d *partialReserveDev) WriteZeroes(off, n int64, flags block.Flags) error {
	if flags&block.Allocate != 0 && off+n > d.limit {
		if sz, _ := d.Dev.Size(); sz < d.limit && off < d.limit {
			d.Dev.Truncate(d.limit)
		}
		return syscall.ENOSPC
	}
	return d.Dev.WriteZeroes(off, n, flags)
}

// TestRegress_PartialReserveGivenBack: a reserve ahead that failed
// part-way left the space it got in the file, past everything the image
// used, and Close kept it (17-27 MiB on a full ext4, against QEMU's
// file; review 53). That part is reserved now: handed out first, and
// given back at Close.
func TestRegress_PartialReserveGivenBack(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	d := &partialReserveDev{Dev: mem, limit: 8 << 20}
	im, err := OpenDevice(d, Options{PreallocSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = 0x55
	}
	for off := int64(0); off < 5<<20; off += int64(len(data)) { // past the first reserve, not past limit
		if err := block.WriteAt(im, data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	r, err := ro.Check(CheckOptions{})
	if err != nil || !r.Clean() {
		t.Fatalf("check: %v %+v", err, r)
	}
	sz, _ := mem.Size()
	if end := r.ImageEndOffset; sz > end {
		t.Errorf("file of %d bytes after Close, the image ends at %d: the failed reserve's space was kept", sz, end)
	}
}
