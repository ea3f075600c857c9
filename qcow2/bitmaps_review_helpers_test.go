package qcow2

import (
	"encoding/binary"
	"testing"

	"github.com/qring/qring/qcow2/format"
)

// rawBitmap is a persistent dirty bitmap as an image's bytes hold it,
// decoded without the engine (for sweeps over many crash clones; the
// tests compare it with qemu-nbd's view where it matters).
type rawBitmap struct {
	name  string
	flags uint32
	gran  uint64
	bits  []byte // on-disk order: bit i of byte j is granule 8*j+i
}

// valid reports whether QEMU would trust the bitmap: the image's
// autoclear bit is set (checked by rawBitmaps) and IN_USE is clear.
func (b rawBitmap) valid() bool { return b.flags&format.BitmapInUse == 0 }

// dirty reports whether the granule holding guest offset off is dirty.
func (b rawBitmap) dirty(off uint64) bool {
	i := off / b.gran
	return i/8 < uint64(len(b.bits)) && b.bits[i/8]&(1<<(i%8)) != 0
}

// rawBitmaps decodes the bitmaps QEMU would load from the image raw:
// none when the autoclear bit is clear.
func rawBitmaps(t *testing.T, raw []byte) []rawBitmap {
	t.Helper()
	h, err := format.ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		return nil
	}
	var ext format.BitmapsExt
	found := false
	for _, e := range h.Extensions {
		if e.Type == format.ExtBitmaps {
			if ext, err = format.ParseBitmapsExt(e.Data); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found {
		return nil
	}
	g := format.NewGeometry(h.ClusterBits, h.RefcountOrder, h.ExtendedL2())
	cs := g.ClusterSize
	es, err := format.ParseBitmapDirectory(raw[ext.DirOffset:uint64(ext.DirOffset)+ext.DirSize], ext.N)
	if err != nil {
		t.Fatal(err)
	}
	var out []rawBitmap
	for _, e := range es {
		b := rawBitmap{name: e.Name, flags: e.Flags, gran: 1 << e.GranularityBits}
		for i := uint64(0); i < uint64(e.TableSize); i++ {
			te := binary.BigEndian.Uint64(raw[uint64(e.TableOffset)+8*i:])
			off, err := format.BitmapDataCluster(te, &g)
			if err != nil {
				t.Fatalf("bitmap %s entry %d: %v", e.Name, i, err)
			}
			part := make([]byte, cs)
			switch {
			case off != 0:
				copy(part, raw[off:uint64(off)+cs])
			case te&format.BitmapAllOnes != 0:
				for k := range part {
					part[k] = 0xff
				}
			}
			b.bits = append(b.bits, part...)
		}
		out = append(out, b)
	}
	return out
}
