package qcow2

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// TestCheck_EmptyBitmapsExtensionIsCorrupt: a bitmaps header extension
// of length 0 is a broken one (QEMU: "Invalid extension length"), not an
// absent one: Check reports a corruption, and a repair (which took the
// bitmaps' clusters for leaks and freed them, exiting clean) changes
// nothing.
func TestCheck_EmptyBitmapsExtensionIsCorrupt(t *testing.T) {
	im, mem := memImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096}, Options{NoBacking: true}, memdev.Options{})
	if err := im.AddBitmap("b0", 65536, true); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x11}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := mem.Bytes()
	be := binary.BigEndian
	off := uint64(be.Uint32(b[100:])) // header_length: the extensions follow
	found := false
	for off+8 <= 4096 {
		typ, n := be.Uint32(b[off:]), be.Uint32(b[off+4:])
		if typ == 0 {
			break
		}
		if typ == format.ExtBitmaps {
			be.PutUint32(b[off+4:], 0)
			found = true
			break
		}
		off += 8 + uint64(n+7)&^7
	}
	if !found {
		t.Fatal("no bitmaps extension in the header")
	}
	for _, mode := range []RepairMode{RepairNone, RepairAll} {
		orig := append([]byte(nil), b...)
		d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
		im, err := OpenDevice(d, Options{NoBacking: true, Repair: mode != RepairNone, ReadOnly: mode == RepairNone})
		if err != nil {
			continue // refused at open: nothing freed
		}
		r, err := im.Check(CheckOptions{Repair: mode})
		im.Close()
		if err == nil && r.Corruptions == 0 {
			t.Errorf("repair %v: %+v: the broken extension is no corruption", mode, r)
		}
		if mode == RepairAll && (r == nil || r.LeaksFixed > 0) {
			t.Errorf("repair all: freed the bitmaps' clusters as leaks: %+v", r)
		}
		if mode == RepairNone && !bytes.Equal(d.Bytes(), orig) {
			t.Error("a check without repair changed the image")
		}
	}
}
