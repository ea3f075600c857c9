package format

import (
	"bytes"
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
