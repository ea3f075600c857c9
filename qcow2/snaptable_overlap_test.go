package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// TestOpen_SnapshotTablesOverlapRefusedWritable: a snapshot table, or a
// snapshot's L1 table, lying on the header, the active L1 table or the
// refcount table is a corruption a writable open refuses, leaving the
// file as it was (it opened: a snapshot change then freed the table's
// clusters, the active L1 among them, and qemu-img check found a
// referenced cluster counted 0); a read-only open still reads it.
func TestOpen_SnapshotTablesOverlapRefusedWritable(t *testing.T) {
	im, mem := memImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096}, Options{NoBacking: true}, memdev.Options{})
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x11}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := im.CreateSnapshot("s0"); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	base := mem.Bytes()
	h, err := format.ParseHeader(base)
	if err != nil {
		t.Fatal(err)
	}
	snapL1Field := uint64(h.SnapshotsOffset) // the first entry's l1_table_offset
	for _, c := range []struct {
		name       string
		field, val uint64
	}{
		{"snapshot table on the active L1", 64, uint64(h.L1TableOffset)},
		{"snapshot table on the refcount table", 64, uint64(h.RefcountTableOffset)},
		{"snapshot L1 on the active L1", snapL1Field, uint64(h.L1TableOffset)},
		{"snapshot L1 on the header", snapL1Field, 0},
	} {
		b := append([]byte(nil), base...)
		be.PutUint64(b[c.field:], c.val)
		d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
		if im, err := OpenDevice(d, Options{NoBacking: true}); err == nil {
			im.Close()
			t.Errorf("%s: opened writable", c.name)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
		if !bytes.Equal(d.Bytes(), b) {
			t.Errorf("%s: the refused open changed the image", c.name)
		}
		ro, err := OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{NoBacking: true, ReadOnly: true})
		if err != nil {
			t.Errorf("%s: read-only open: %v", c.name, err)
			continue
		}
		ro.Close()
	}
}
