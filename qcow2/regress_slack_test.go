package qcow2

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// An L1 entry naming an L2 table at the file's end (accepted by a
// writable open: fileLimit's cluster of slack) lay at the high-water
// mark. The engine wrote the table back there; once the table was freed,
// takeSpace judged its cluster fresh and a new data cluster placed there
// showed the old table's bytes around the guest data (SP2). Found by a
// review helper. The mark now starts past such tables.
func TestRegress_SlackTableNotFresh(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{NoPassDiscard: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		mustWrite(t, im, pattern(cs, byte(i+1)), int64(i)*cs)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := im.Discard(0, 8*cs); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	raw := mem.Bytes()
	fsize := int64(len(raw))
	if fsize%cs != 0 {
		t.Fatalf("file size %d not aligned", fsize)
	}
	l1off := int64(binary.BigEndian.Uint64(raw[40:48]))
	rtoff := int64(binary.BigEndian.Uint64(raw[48:56]))
	rb := int64(binary.BigEndian.Uint64(raw[rtoff : rtoff+8]))
	oldL2 := int64(binary.BigEndian.Uint64(raw[l1off:l1off+8]) &^ (1 << 63))
	t.Logf("fsize %d clusters, L1 at %d, reftable %d, refblock %d, L2 %d", fsize/cs, l1off/cs, rtoff/cs, rb/cs, oldL2/cs)
	put := func(off int64, b []byte) {
		if err := block.WriteAt(mem, b, off); err != nil {
			t.Fatal(err)
		}
	}
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(fsize)|1<<63)
	put(l1off, e[:]) // L1[0] -> a table just past the end (inside the slack)
	var r [2]byte
	binary.BigEndian.PutUint16(r[:], 1)
	put(rb+2*(fsize/cs), r[:]) // counted
	binary.BigEndian.PutUint16(r[:], 0)
	put(rb+2*(oldL2/cs), r[:]) // the old table is free
	if err := mem.Flush(); err != nil {
		t.Fatal(err)
	}

	im, err = OpenDevice(mem, Options{NoPassDiscard: true})
	if err != nil {
		t.Fatalf("writable open: %v", err)
	}
	defer im.Close()
	mustWrite(t, im, pattern(4096, 0x51), 0)
	if err := im.Flush(); err != nil { // the table lands at fsize (past the mark)
		t.Fatal(err)
	}
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4096, 0x52), 0) // copies the shared L2 table away
	if err := im.DeleteSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Logf("mark %d clusters, FreshSkips %d", uint64(im.space.mark())/cs, im.c.freshSkips.Load())
	zeros := make([]byte, cs-4096)
	for k := int64(1); k <= 16; k++ {
		mustWrite(t, im, pattern(4096, byte(0x60+k)), k*cs+cs-4096)
		got := make([]byte, cs-4096)
		if _, err := im.ReadAt(got, k*cs); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, zeros) {
			i := bytes.IndexFunc(got, func(r rune) bool { return r != 0 })
			e, _ := im.rawEntry(format.GuestOff(k * cs))
			t.Fatalf("guest cluster %d (host %d): byte %d of the never-written head is %#x, not zero (freshSkips %d)",
				k, uint64(e.Offset())/cs, i, got[i], im.c.freshSkips.Load())
		}
	}
}
