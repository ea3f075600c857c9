package format

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestParseSnapshots_Fixture(t *testing.T) {
	h, err := ParseHeader(readFixture(t, "snapshot.hdr"))
	if err != nil {
		t.Fatal(err)
	}
	tab := readFixture(t, "snapshot.snap")
	snaps, n, err := ParseSnapshots(tab, h.NbSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots", len(snaps))
	}
	s := snaps[0]
	g := h.Geometry()
	// qemu-img snapshot -c s1: id "1", L1 copied to a new cluster, extra
	// data = vm_state_size_large, disk_size, icount (24 bytes).
	if s.ID != "1" || s.Name != "s1" {
		t.Errorf("ID %q Name %q", s.ID, s.Name)
	}
	if s.L1Size != h.L1Size || s.L1TableOffset == 0 || !g.Aligned(s.L1TableOffset) || s.L1TableOffset == h.L1TableOffset {
		t.Errorf("L1 %#x size %d", s.L1TableOffset, s.L1Size)
	}
	if s.DiskSize != h.Size || len(s.ExtraData) != 24 || s.VMStateSize != 0 || s.DateSec == 0 {
		t.Errorf("snapshot %+v", s)
	}
	// 40 + 24 + 1 + 2 = 67, padded to 72; QEMU's file ends at 67.
	if n != 72 || len(tab) != 67 {
		t.Errorf("table length %d (file %d)", n, len(tab))
	}
	if _, _, err := ParseSnapshots(tab, 2); err == nil {
		t.Errorf("two snapshots parsed from a one-entry table")
	}
	if out, n, err := ParseSnapshots(nil, 0); err != nil || n != 0 || len(out) != 0 {
		t.Errorf("empty table: %v %d %v", out, n, err)
	}
}

// snapEntry builds one snapshot table entry, padded to 8.
func snapEntry(l1off uint64, l1size uint32, id, name string, extra []byte) []byte {
	b := make([]byte, 40)
	binary.BigEndian.PutUint64(b[0:], l1off)
	binary.BigEndian.PutUint32(b[8:], l1size)
	binary.BigEndian.PutUint16(b[12:], uint16(len(id)))
	binary.BigEndian.PutUint16(b[14:], uint16(len(name)))
	binary.BigEndian.PutUint32(b[36:], uint32(len(extra)))
	b = append(append(append(b, extra...), id...), name...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestParseSnapshots_Hostile(t *testing.T) {
	good := snapEntry(0x70000, 2, "1", "s1", make([]byte, 16))
	tests := []struct {
		name  string
		b     []byte
		n     uint32
		field string
		err   error
	}{
		{"truncated fixed part", good[:39], 1, "snapshot_table", ErrCorrupt},
		{"truncated name", good[:40+16+2], 1, "snapshot_table", ErrCorrupt},
		{"second missing", good, 2, "snapshot_table", ErrCorrupt},
		{"extra data too large", snapEntry(0x70000, 2, "1", "s1", make([]byte, 1032)), 1, "snapshot_table", ErrCorrupt},
		{"id past table", func() []byte {
			b := append([]byte(nil), good...)
			binary.BigEndian.PutUint16(b[12:], 0xffff)
			return b
		}(), 1, "snapshot_table", ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := ParseSnapshots(tc.b, tc.n)
			if out != nil {
				t.Errorf("entries returned with error")
			}
			wantFieldError(t, err, tc.field, tc.err, "")
		})
	}
	// An L1 table no snapshot can have parses (QEMU lists the entry);
	// CheckL1 refuses it, as it refuses an unaligned one.
	g := NewGeometry(16, 4, false)
	huge, _, err := ParseSnapshots(snapEntry(0x70000, 0xffffffff, "1", "s1", nil), 1)
	if err != nil || len(huge) != 1 {
		t.Fatalf("huge L1: %v", err)
	}
	wantFieldError(t, huge[0].CheckL1(&g), "snapshot_l1_size", ErrUnsupported, "")
	unaligned, _, err := ParseSnapshots(snapEntry(0x70008, 2, "1", "s1", nil), 1)
	if err != nil || len(unaligned) != 1 {
		t.Fatalf("unaligned L1: %v", err)
	}
	wantFieldError(t, unaligned[0].CheckL1(&g), "snapshot_l1_table_offset", ErrCorrupt, "")
	if out, _, _ := ParseSnapshots(good, 1); out[0].CheckL1(&g) != nil {
		t.Errorf("good entry refused: %v", out[0].CheckL1(&g))
	}
	two := append(append([]byte(nil), good...), snapEntry(0x80000, 2, "2", "second", nil)...)
	out, n, err := ParseSnapshots(two, 2)
	if err != nil || len(out) != 2 || n != uint64(len(two)) || out[1].Name != "second" || out[1].DiskSize != 0 || out[1].L1TableOffset != 0x80000 {
		t.Errorf("two entries: %+v %d %v", out, n, err)
	}
}

// FuzzParseSnapshots: never panics; errors are typed; on success there
// are n entries and the table fits in the input but for the last
// entry's padding.
func FuzzParseSnapshots(f *testing.F) {
	f.Add(readFixture(f, "snapshot.snap"), uint32(1))
	f.Add(snapEntry(0x70000, 2, "1", "s1", make([]byte, 24)), uint32(1))
	f.Add(append(snapEntry(0x70000, 2, "1", "a", nil), snapEntry(0x80000, 2, "2", "b", make([]byte, 16))...), uint32(2))
	f.Fuzz(func(t *testing.T, b []byte, n uint32) {
		need, complete := SnapshotTableNeed(b, n)
		if !complete && need <= uint64(len(b)) {
			t.Fatalf("incomplete, yet %d bytes needed of %d", need, len(b))
		}
		out, size, err := ParseSnapshots(b, n)
		if err == nil && (!complete || need > uint64(len(b))) {
			t.Fatalf("parsed, yet SnapshotTableNeed says %d bytes, complete %v, of %d", need, complete, len(b))
		}
		if err != nil {
			if !typedError(err) || out != nil {
				t.Fatalf("error %v, %d entries", err, len(out))
			}
			return
		}
		if uint32(len(out)) != n || size > uint64(len(b))+7 || size%8 != 0 {
			t.Fatalf("%d entries, size %d for %d bytes", len(out), size, len(b))
		}
		var sum uint64
		for _, s := range out {
			e := 40 + uint64(len(s.ExtraData)+len(s.ID)+len(s.Name))
			sum += (e + 7) &^ 7
			if len(s.ExtraData) > 1024 {
				t.Fatalf("entry %+v past the caps", s)
			}
			// An L1 no snapshot can have parses; CheckL1 refuses it.
			g := NewGeometry(16, 4, false)
			if err := s.CheckL1(&g); (err != nil) != (uint64(s.L1Size)*8 > MaxL1Bytes || !g.Aligned(s.L1TableOffset)) || (err != nil && !typedError(err)) {
				t.Fatalf("entry %+v: CheckL1 %v", s, err)
			}
		}
		if sum != size {
			t.Fatalf("entries add up to %d, size %d", sum, size)
		}
	})
}

// TestParseSnapshots_TooMuchExtraData: an entry with more than 1024
// bytes of extra data is refused in QEMU's words (qimg said the entry
// ran past the table, though the table held it).
func TestParseSnapshots_TooMuchExtraData(t *testing.T) {
	b, err := EncodeSnapshots([]Snapshot{{L1TableOffset: 0x30000, ID: "1", Name: "s1", ExtraData: make([]byte, 16)}})
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, make([]byte, 4096)...) // room for the claimed extra data
	binary.BigEndian.PutUint32(b[36:], 2000)
	_, _, err = ParseSnapshots(b, 1)
	if err == nil || !strings.Contains(err.Error(), "Too much extra metadata in snapshot table entry 0") {
		t.Fatalf("got %v", err)
	}
}
