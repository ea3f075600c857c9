package qcow2

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// TestCheck_UnalignedRefblockReadOnlyOpenUnchanged: a Check with repair
// of a damaged image opened ReadOnly refuses the repair ("the image is
// left as it was"), but the unaligned refcount block's corruption event
// wrote the corrupt bit into its header all the same, and reported
// "Marking image as corrupt" (found by review of 5ffee0d). An image
// opened ReadOnly is never written: the event is the read-only one.
func TestCheck_UnalignedRefblockReadOnlyOpenUnchanged(t *testing.T) {
	be := binary.BigEndian
	b := damagedBase(t, false)
	rt := be.Uint64(b[48:])
	be.PutUint64(b[rt:], be.Uint64(b[rt:])+512)
	for _, o := range []Options{{ReadOnly: true}, {ReadOnly: true, Check: true}} {
		for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
			d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
			im, err := OpenDevice(d, o)
			if err != nil {
				t.Fatal(err)
			}
			r, err := im.Check(CheckOptions{Repair: mode})
			if err != nil {
				t.Fatal(err)
			}
			msgs := strings.Join(r.Messages, "\n")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Bytes(), b) {
				t.Errorf("open ReadOnly=%v Check=%v, Check(%v) changed the image (incompatible features %#x)\n%s", o.ReadOnly, o.Check, mode, be.Uint64(d.Bytes()[72:]), msgs)
			}
			if strings.Contains(msgs, "Marking image as corrupt") || !strings.Contains(msgs, "qcow2: Image is corrupt: Refblock offset") {
				t.Errorf("open ReadOnly=%v Check=%v, Check(%v): want the read-only corruption event\n%s", o.ReadOnly, o.Check, mode, msgs)
			}
		}
	}
}
