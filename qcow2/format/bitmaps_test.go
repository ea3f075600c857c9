package format

import (
	"encoding/binary"
	"errors"
	"testing"
)

// bitmapDir builds a directory of one entry per name.
func bitmapDir(tableOff uint64, tableSize uint32, names ...string) []byte {
	var b []byte
	for _, n := range names {
		e := make([]byte, 24)
		binary.BigEndian.PutUint64(e, tableOff)
		binary.BigEndian.PutUint32(e[8:], tableSize)
		e[16], e[17] = 1, 16 // dirty tracking, 64 KiB granularity
		binary.BigEndian.PutUint16(e[18:], uint16(len(n)))
		e = append(e, n...)
		for len(e)%8 != 0 {
			e = append(e, 0)
		}
		b = append(b, e...)
	}
	return b
}

func TestParseBitmapDirectory(t *testing.T) {
	b := bitmapDir(0x30000, 2, "b0", "backup-2026")
	got, err := ParseBitmapDirectory(b, 2)
	if err != nil || len(got) != 2 || got[1].Name != "backup-2026" || got[0].TableOffset != 0x30000 || got[0].TableSize != 2 {
		t.Fatalf("got %+v, %v", got, err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		n    uint32
	}{
		{"more entries than bytes", b, 3},
		{"cut name", b[:25], 1},
		{"empty name", bitmapDir(0x30000, 1, ""), 1},
		{"huge table", bitmapDir(0x30000, MaxBitmapTable+1, "x"), 1},
		// QEMU: "Broken bitmap directory" (bitmap_list_load reads
		// entries up to the directory's end).
		{"fewer entries than bytes", b, 1},
		{"padding past the entries", append(bitmapDir(0x30000, 1, "b0"), make([]byte, 8)...), 1},
	} {
		if _, err := ParseBitmapDirectory(c.b, c.n); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestParseBitmapsExt(t *testing.T) {
	ext := make([]byte, 24)
	binary.BigEndian.PutUint32(ext, 1)
	binary.BigEndian.PutUint64(ext[8:], 32)
	binary.BigEndian.PutUint64(ext[16:], 0x20000)
	if e, err := ParseBitmapsExt(ext); err != nil || e.N != 1 || e.DirSize != 32 || e.DirOffset != 0x20000 {
		t.Fatalf("%+v %v", e, err)
	}
	for _, edit := range []func(b []byte) []byte{
		func(b []byte) []byte { return b[:16] },
		func(b []byte) []byte { b[4] = 1; return b },
		func(b []byte) []byte { binary.BigEndian.PutUint32(b, 0); return b },
		func(b []byte) []byte { binary.BigEndian.PutUint64(b[8:], MaxBitmapDirectory+1); return b },
	} {
		if _, err := ParseBitmapsExt(edit(append([]byte(nil), ext...))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("accepted: %v", err)
		}
	}
}

func TestBitmapDataCluster(t *testing.T) {
	g := Geometry{ClusterSize: 65536, ClusterMask: 65535, ClusterBits: 16}
	for _, c := range []struct {
		e    uint64
		want HostOff
		ok   bool
	}{
		{0, 0, true}, {1, 0, true}, {0x50000, 0x50000, true},
		{0x50001, 0, false}, {0x50200, 0, false}, {1 << 60, 0, false}, {0x2, 0, false},
	} {
		got, err := BitmapDataCluster(c.e, &g)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%#x: %#x %v", c.e, got, err)
		}
	}
}

// FuzzBitmapDirectory: hostile directories and extensions give a clear
// error or entries inside the bytes, never a panic.
func FuzzBitmapDirectory(f *testing.F) {
	f.Add(bitmapDir(0x30000, 2, "b0", "b1"), uint32(2), make([]byte, 24))
	f.Add([]byte{}, uint32(1), []byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, dir []byte, n uint32, ext []byte) {
		if e, err := ParseBitmapsExt(ext); err == nil && (e.N == 0 || e.DirSize > MaxBitmapDirectory) {
			t.Fatalf("accepted %+v", e)
		}
		got, err := ParseBitmapDirectory(dir, n%70000)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		for _, e := range got {
			if e.Name == "" || e.TableSize > MaxBitmapTable {
				t.Fatalf("entry %+v", e)
			}
		}
		g := Geometry{ClusterSize: 512, ClusterMask: 511, ClusterBits: 9}
		for i := 0; i+8 <= len(dir); i += 8 {
			if off, err := BitmapDataCluster(binary.BigEndian.Uint64(dir[i:]), &g); err == nil && !g.Aligned(off) {
				t.Fatalf("unaligned %#x", off)
			}
		}
	})
}

func TestBitmapTableSize(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		gran uint8
		cs   uint64
		want uint64
	}{
		{0, 16, 65536, 0},
		{1, 16, 65536, 1},
		{16 << 20, 16, 65536, 1},          // 256 bits
		{65536 * 8 * 65536, 16, 65536, 1}, // exactly one cluster of bits
		{65536*8*65536 + 1, 16, 65536, 2},
		{1 << 40, 9, 512, 1 << 19}, // 2^31 bits in 4096-bit clusters
	} {
		if got := BitmapTableSize(tc.size, tc.gran, tc.cs); got != tc.want {
			t.Errorf("BitmapTableSize(%d, %d, %d) = %d, want %d", tc.size, tc.gran, tc.cs, got, tc.want)
		}
	}
}

func TestPutBitmapEntry(t *testing.T) {
	dir := bitmapDir(0x50000, 1, "a", "bb")
	es, err := ParseBitmapDirectory(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	e := es[1]
	e.TableOffset, e.TableSize, e.Flags = 0x90000, 3, BitmapInUse|BitmapAuto
	PutBitmapEntry(dir, e)
	got, err := ParseBitmapDirectory(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != es[0] || got[1] != e {
		t.Fatalf("after PutBitmapEntry: %+v, want %+v and %+v", got, es[0], e)
	}
}
