package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/uring"
)

// TestSnapshot_NewTablesWriteTheirBytesLikeQemu: a snapshot's L1 copy,
// the snapshot table, a bitmap's table and the bitmap directory are
// written as QEMU writes them, their bytes and not their clusters' zeros
// past them (which a nearly full file system may have no room for): with
// no reserve ahead the file ends at the last table's last byte, inside
// its cluster. The engine then goes on as with any file that ends inside
// a cluster: clusters allocated after it, and the tables' clusters once
// freed and handed out again (the rest of them never written, or holding
// old guest data), read as zeros where they were not written.
func TestSnapshot_NewTablesWriteTheirBytesLikeQemu(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{512, 4096, 64 << 10} {
		for _, ahead := range []int64{-1, 0} {
			for _, direct := range []bool{false, true} {
				t.Run(fmt.Sprintf("cs%d_reserve%v_direct%v", cs, ahead == 0, direct), func(t *testing.T) {
					tablesThenReuse(t, cs, ahead, direct)
				})
			}
		}
	}
}

// tablesThenReuse is the test for one cluster size, with or without a
// reserve ahead, through the page cache or with O_DIRECT (the tables'
// writes rounded up to the device's alignment: the file ends at that
// boundary).
func tablesThenReuse(t *testing.T, cs int, ahead int64, direct bool) {
	const size = 16 << 20
	p := filepath.Join(testkit.Dir(t), "t.qcow2")
	if err := Create(p, CreateOptions{Size: size, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	o := Options{PreallocSize: ahead, NoPassDiscard: true}
	align := uint64(1)
	if direct {
		o.Opener = uring.Opener(uring.Options{Direct: true})
	}
	im, err := Open(p, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { im.Close() }()
	if direct {
		align = uint64(max(im.dcap.Align, 1))
	}
	model := make([]byte, size)
	seed := byte(1)
	write := func(off, n int64) {
		t.Helper()
		b := pattern(int(n), seed)
		seed += 3
		if _, err := im.WriteAt(b, off); err != nil {
			t.Fatalf("write [%d, +%d): %v", off, n, err)
		}
		copy(model[off:], b)
	}
	verify := func(what string) {
		t.Helper()
		got := make([]byte, size)
		if _, err := im.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if i := testkit.FirstDiff(got, model); i >= 0 {
			t.Fatalf("%s: guest byte %d reads %#x, want %#x", what, i, got[i], model[i])
		}
	}
	fsize := func() int64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	// endsAt wants the file to end at end when what's table lies past
	// old, the file's end before it was made (nothing else is
	// allocated after it): at its last byte, inside its cluster.
	endsAt := func(what string, off, end, old uint64) {
		t.Helper()
		if ahead >= 0 || off < old {
			return // a reserve, or the table in a free cluster
		}
		end = (end + align - 1) / align * align
		if got := uint64(fsize()); got != end {
			t.Errorf("%s at %#x: the file ends at %#x, not at its last byte (%#x) as QEMU's", what, off, got, end)
		}
	}
	// Guest data in whole and partial clusters.
	write(0, 3*int64(cs))
	write(8<<20+100, 1000)
	write(4<<20, 4*int64(cs))
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}

	old := uint64(fsize())
	sn, err := im.CreateSnapshot("s1")
	if err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	soff := uint64(im.hdr.SnapshotsOffset)
	im.mu.Unlock()
	b, err := format.EncodeSnapshots([]format.Snapshot{sn})
	if err != nil {
		t.Fatal(err)
	}
	need, _ := format.SnapshotTableNeed(b, 1)
	endsAt("the snapshot table", soff, soff+need, old)
	old = uint64(fsize())
	if err := im.AddBitmap("b1", 64<<10, true); err != nil {
		t.Fatal(err)
	}
	ext := im.bitmaps.Load().ext
	endsAt("the bitmap directory", uint64(ext.DirOffset), uint64(ext.DirOffset)+ext.DirSize, old)
	// Some guest data discarded: its host clusters free again, their
	// old bytes kept (NoPassDiscard), for the tables below.
	if err := im.Discard(4<<20, 4*int64(cs)); err != nil {
		t.Fatal(err)
	}
	clear(model[4<<20 : 4<<20+4*cs])
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	// Allocations after it: a partial write into a new cluster reads
	// zeros around it.
	write(12<<20+17, 300)
	write(2<<20, int64(cs)+512)
	verify("after the snapshot")

	write(10<<20+511, 2)
	verify("after the bitmap")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	ownCheck(t, p)
	testkit.QemuCheck(t, p)
	if im, err = Open(p, o); err != nil {
		t.Fatal(err)
	}
	verify("reopened")

	// New tables in the free clusters (old guest data past their
	// bytes), then all the tables' clusters freed and handed out again
	// to guest data written in part: the rest reads as zeros whatever
	// the cluster held.
	if _, err := im.CreateSnapshot("s2"); err != nil {
		t.Fatal(err)
	}
	if err := im.AddBitmap("b2", 64<<10, false); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"s1", "s2"} {
		if err := im.DeleteSnapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"b1", "b2"} {
		if err := im.RemoveBitmap(b); err != nil {
			t.Fatal(err)
		}
	}
	for k := int64(0); k < 8; k++ {
		write(6<<20+k*int64(cs)*2+int64(cs)/4, int64(cs)/2)
	}
	verify("after the tables' clusters were reused")
	if _, err := im.CreateSnapshot("s3"); err != nil {
		t.Fatal(err)
	}
	write(14<<20, 64)
	verify("after a second snapshot")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	ownCheck(t, p)
	testkit.QemuCheck(t, p)
	if im, err = Open(p, Options{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	verify("reopened at the end")
	got := make([]byte, size)
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("differs")
	}
}
