package format

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestEncodeSnapshots_RoundTrip(t *testing.T) {
	in := []Snapshot{
		{L1TableOffset: 0x30000, L1Size: 2, ID: "1", Name: "s1", DateSec: 1700000000, DateNsec: 5,
			VMClockNsec: 7, ExtraData: SnapshotExtra(0, 1<<30, -1), DiskSize: 1 << 30},
		{L1TableOffset: 0x50000, L1Size: 1, ID: "22", Name: "a longer name"},
	}
	b, err := EncodeSnapshots(in)
	if err != nil {
		t.Fatal(err)
	}
	out, n, err := ParseSnapshots(b, uint32(len(in)))
	if err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(b)) || len(b)%8 != 0 {
		t.Fatalf("size %d, encoded %d", n, len(b))
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n%+v\n%+v", in, out)
	}
}

// FuzzEncodeSnapshots: whatever ParseSnapshots accepts encodes to a table
// of the size it reported that parses back to the same entries.
func FuzzEncodeSnapshots(f *testing.F) {
	b, _ := EncodeSnapshots([]Snapshot{{L1TableOffset: 0x10000, L1Size: 1, ID: "1", Name: "x", ExtraData: SnapshotExtra(1, 2, 3)}})
	f.Add(b, uint32(1))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, n uint32) {
		n %= 8
		snaps, size, err := ParseSnapshots(b, n)
		if err != nil {
			return
		}
		enc, err := EncodeSnapshots(snaps)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(enc)) != size {
			t.Fatalf("encoded %d bytes, parsed %d", len(enc), size)
		}
		again, size2, err := ParseSnapshots(enc, n)
		if err != nil || size2 != size || !reflect.DeepEqual(again, snaps) {
			t.Fatalf("re-parse: %v %d %+v != %+v", err, size2, again, snaps)
		}
		enc2, _ := EncodeSnapshots(again)
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding not stable")
		}
	})
}

// TestSnapshotTableNeed: an entry with a long name takes more than the
// 1200 bytes an open first reads for it; the bytes read say how many
// more (review 53: an image with a 2000-byte snapshot name did not
// open).
func TestSnapshotTableNeed(t *testing.T) {
	snaps := []Snapshot{
		{ID: "1", Name: "a", ExtraData: SnapshotExtra(0, 1<<20, 0)},
		{ID: "2", Name: string(bytes.Repeat([]byte{'n'}, 2000)), ExtraData: SnapshotExtra(0, 1<<20, 0)},
	}
	b, err := EncodeSnapshots(snaps)
	if err != nil {
		t.Fatal(err)
	}
	end := uint64(len(b)) - (8-(40+24+1+2000)%8)%8 // without the last padding
	for _, c := range []struct {
		have     int
		need     uint64
		complete bool
	}{{0, 40, false}, {30, 40, false}, {1200, end, false}, {int(end) - 1, end, false}, {int(end), end, true}, {len(b), end, true}} {
		need, complete := SnapshotTableNeed(b[:c.have], 2)
		if need != c.need || complete != c.complete {
			t.Errorf("%d bytes: need %d complete %v, want %d %v", c.have, need, complete, c.need, c.complete)
		}
	}
	if _, _, err := ParseSnapshots(b[:end], 2); err != nil {
		t.Errorf("the table SnapshotTableNeed calls complete does not parse: %v", err)
	}
}

// TestEncodeSnapshots_TableCap: a table past QEMU's 64 MiB is refused
// (QEMU refuses to write one, and would not open the image with it);
// one within is written (review 53).
func TestEncodeSnapshots_TableCap(t *testing.T) {
	name := string(bytes.Repeat([]byte{'x'}, 65000))
	var snaps []Snapshot
	for len(snaps)*(40+16+65000+8) < MaxSnapshotTableBytes-65100 {
		snaps = append(snaps, Snapshot{ID: "1", Name: name, ExtraData: make([]byte, 16)})
	}
	if _, err := EncodeSnapshots(snaps); err != nil {
		t.Fatalf("a table within the cap: %v", err)
	}
	snaps = append(snaps, snaps[0], snaps[0])
	if _, err := EncodeSnapshots(snaps); !errors.Is(err, ErrUnsupported) {
		t.Errorf("a table past the cap: %v, want ErrUnsupported", err)
	}
}
