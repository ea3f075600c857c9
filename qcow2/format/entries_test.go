package format

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func TestNewGeometry(t *testing.T) {
	tests := []struct {
		clusterBits, order uint32
		ext                bool
		want               Geometry
	}{
		{16, 4, false, Geometry{ClusterBits: 16, ClusterSize: 65536, ClusterMask: 65535, L2EntrySize: 8, L2Bits: 13, L2Entries: 8192,
			RefcountOrder: 4, RefcountBits: 16, RefblockBits: 15, RefblockEntries: 32768, RefcountMax: 65535, CompressedOffBits: 54}},
		{16, 4, true, Geometry{ClusterBits: 16, ClusterSize: 65536, ClusterMask: 65535, ExtendedL2: true, L2EntrySize: 16, L2Bits: 12, L2Entries: 4096,
			RefcountOrder: 4, RefcountBits: 16, RefblockBits: 15, RefblockEntries: 32768, RefcountMax: 65535, CompressedOffBits: 54}},
		{9, 0, false, Geometry{ClusterBits: 9, ClusterSize: 512, ClusterMask: 511, L2EntrySize: 8, L2Bits: 6, L2Entries: 64,
			RefcountOrder: 0, RefcountBits: 1, RefblockBits: 12, RefblockEntries: 4096, RefcountMax: 1, CompressedOffBits: 61}},
		{21, 6, false, Geometry{ClusterBits: 21, ClusterSize: 2 << 20, ClusterMask: 2<<20 - 1, L2EntrySize: 8, L2Bits: 18, L2Entries: 1 << 18,
			RefcountOrder: 6, RefcountBits: 64, RefblockBits: 18, RefblockEntries: 1 << 18, RefcountMax: ^uint64(0), CompressedOffBits: 49}},
		{21, 5, true, Geometry{ClusterBits: 21, ClusterSize: 2 << 20, ClusterMask: 2<<20 - 1, ExtendedL2: true, L2EntrySize: 16, L2Bits: 17, L2Entries: 1 << 17,
			RefcountOrder: 5, RefcountBits: 32, RefblockBits: 19, RefblockEntries: 1 << 19, RefcountMax: 1<<32 - 1, CompressedOffBits: 49}},
	}
	for _, tc := range tests {
		if got := NewGeometry(tc.clusterBits, tc.order, tc.ext); got != tc.want {
			t.Errorf("NewGeometry(%d, %d, %v) =\n%+v, want\n%+v", tc.clusterBits, tc.order, tc.ext, got, tc.want)
		}
	}

	// Address splitting on the 64 KiB default: one L2 maps 512 MiB, one
	// refblock covers 32768 clusters.
	g := NewGeometry(16, 4, false)
	off := GuestOff(3<<29 + 5<<16 + 123)
	if g.L1Index(off) != 3 || g.L2Index(off) != 5 || g.InCluster(off) != 123 || g.GuestCluster(off) != 3*8192+5 {
		t.Errorf("split %#x: %d %d %d", off, g.L1Index(off), g.L2Index(off), g.InCluster(off))
	}
	if g.GuestClusterOff(3*8192+5) != off-123 || g.HostCluster(0x70000+9) != 7 || g.HostClusterOff(7) != 0x70000 ||
		g.HostFor(0x70000, off) != 0x70000+123 {
		t.Errorf("cluster offsets of %#x", off)
	}
	if tab, blk := g.RefIndex(32768*2 + 7); tab != 2 || blk != 7 {
		t.Errorf("RefIndex = %d, %d", tab, blk)
	}
	if g.L1EntriesFor(4<<30) != 8 || g.L1EntriesFor(4<<30+1) != 9 || g.L1EntriesFor(0) != 0 {
		t.Errorf("L1EntriesFor")
	}
	if g.SubclusterSize() != 2048 || !g.Aligned(0x50000) || g.Aligned(0x50200) {
		t.Errorf("SubclusterSize/Aligned")
	}
	// Largest size: no overflow.
	g = NewGeometry(9, 4, false)
	if got := g.L1EntriesFor(MaxVirtualSize); got != MaxVirtualSize>>15 {
		t.Errorf("L1EntriesFor(max) = %d", got)
	}
}

func TestL1Entry_Validate(t *testing.T) {
	g16 := NewGeometry(16, 4, false)
	g9 := NewGeometry(9, 4, false)
	tests := []struct {
		name   string
		e      L1Entry
		g      *Geometry
		ok     bool
		off    HostOff
		copied bool
	}{
		{"unallocated", 0, &g16, true, 0, false},
		{"allocated", MakeL1(0x50000, true), &g16, true, 0x50000, true},
		{"not copied", MakeL1(0x50000, false), &g16, true, 0x50000, false},
		{"highest offset", L1Entry(0x00ffffffffff0000), &g16, true, 0x00ffffffffff0000, false},
		{"reserved bit 0", L1Entry(0x50001), &g16, false, 0x50000, false},
		{"reserved bit 8", L1Entry(0x50100), &g16, false, 0x50000, false},
		{"reserved bit 56", L1Entry(1<<56 | 0x50000), &g16, false, 0x50000, false},
		{"reserved bit 62", L1Entry(1<<62 | 0x50000), &g16, false, 0x50000, false},
		{"misaligned", L1Entry(0x50200), &g16, false, 0x50200, false},
		{"512-byte clusters", L1Entry(0x50200 | OflagCopied), &g9, true, 0x50200, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate(tc.g)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				wantFieldError(t, err, "l1_entry", ErrCorrupt, "")
			}
			if tc.e.Offset() != tc.off || tc.e.Copied() != tc.copied {
				t.Errorf("Offset %#x Copied %v", tc.e.Offset(), tc.e.Copied())
			}
		})
	}
}

func TestL2Entry_TypeValidate(t *testing.T) {
	g := NewGeometry(16, 4, false)
	gx := NewGeometry(16, 4, true)
	tests := []struct {
		name    string
		e       L2Entry
		typ     ClusterType
		version uint32
		g       *Geometry
		ok      bool
	}{
		{"unallocated", 0, ClusterUnallocated, 3, &g, true},
		{"unallocated v2", 0, ClusterUnallocated, 2, &g, true},
		{"copied without offset", OflagCopied, ClusterUnallocated, 3, &g, true},
		{"normal", MakeL2(0x50000, true, false), ClusterNormal, 3, &g, true},
		{"normal v2", MakeL2(0x50000, true, false), ClusterNormal, 2, &g, true},
		{"normal shared", MakeL2(0x50000, false, false), ClusterNormal, 3, &g, true},
		{"normal extended", MakeL2(0x50000, true, false), ClusterNormal, 3, &gx, true},
		{"zero plain", MakeL2(0, false, true), ClusterZeroPlain, 3, &g, true},
		{"zero alloc", MakeL2(0x50000, true, true), ClusterZeroAlloc, 3, &g, true},
		{"zero plain v2", MakeL2(0, false, true), ClusterZeroPlain, 2, &g, false},
		{"zero alloc v2", MakeL2(0x50000, true, true), ClusterZeroAlloc, 2, &g, false},
		{"zero bit extended", MakeL2(0x50000, true, true), ClusterZeroAlloc, 3, &gx, false},
		{"reserved bit 1", L2Entry(0x50002), ClusterNormal, 3, &g, false},
		{"reserved bit 8", L2Entry(0x50100), ClusterNormal, 3, &g, false},
		{"reserved bit 56", L2Entry(1<<56 | 0x50000), ClusterNormal, 3, &g, false},
		{"reserved bit 61", L2Entry(1<<61 | 0x50000), ClusterNormal, 3, &g, false},
		{"misaligned", L2Entry(0x50200 | OflagCopied), ClusterNormal, 3, &g, false},
		{"compressed", OflagCompressed | 3<<54 | 0x12345, ClusterCompressed, 3, &g, true},
		{"compressed v2", OflagCompressed | 0x12345, ClusterCompressed, 2, &g, true},
		{"compressed extended", OflagCompressed | 0x12345, ClusterCompressed, 3, &gx, true},
		{"compressed with zero-bit position set", OflagCompressed | 0x12341, ClusterCompressed, 3, &g, true},
		{"compressed with COPIED", OflagCopied | OflagCompressed | 0x12345, ClusterCompressed, 3, &g, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.e.Type(); got != tc.typ {
				t.Errorf("Type = %v, want %v", got, tc.typ)
			}
			err := tc.e.Validate(tc.g, tc.version)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				wantFieldError(t, err, "l2_entry", ErrCorrupt, "")
			}
		})
	}
	for typ, want := range map[ClusterType]string{
		ClusterUnallocated: "unallocated", ClusterZeroPlain: "zero-plain", ClusterZeroAlloc: "zero-alloc",
		ClusterNormal: "normal", ClusterCompressed: "compressed", 9: "ClusterType(9)",
	} {
		if typ.String() != want {
			t.Errorf("String(%d) = %q", typ, typ.String())
		}
	}
}

func TestValidateReftableEntry(t *testing.T) {
	g := NewGeometry(16, 4, false)
	for _, tc := range []struct {
		v  uint64
		ok bool
	}{
		{0, true}, {0x20000, true}, {0xffffffffffff0000, true},
		{0x20001, false}, {0x20100, false}, {0x20200, false},
	} {
		err := ValidateReftableEntry(&g, HostOff(tc.v))
		if tc.ok != (err == nil) {
			t.Errorf("%#x: %v", tc.v, err)
		}
		if err != nil {
			wantFieldError(t, err, "refcount_table_entry", ErrCorrupt, "")
		}
	}
}

// TestCompressed_QEMUExample is worked by hand from QEMU's
// qcow2_parse_compressed_l2_entry: for 64 KiB clusters csize_shift = 54,
// nb_csectors = field + 1 and csize = nb_csectors*512 - (coffset & 511).
func TestCompressed_QEMUExample(t *testing.T) {
	tests := []struct {
		name        string
		clusterBits uint32
		e           L2Entry
		off         HostOff
		size        uint64
	}{
		// coffset 0x12345 (0x145 = 325 into its sector), field 3:
		// 4 sectors, 4*512 - 325 = 1723 bytes.
		{"64k", 16, OflagCompressed | 3<<54 | 0x12345, 0x12345, 1723},
		// 512-byte clusters: 61 offset bits, one size bit.
		{"512 one sector", 9, OflagCompressed | 0x1000, 0x1000, 512},
		{"512 two sectors", 9, OflagCompressed | 1<<61 | 0x1001, 0x1001, 1023},
		// 2 MiB clusters: 49 offset bits, 13 size bits, all set: 8192
		// sectors = 4 MiB, less 511.
		{"2M max", 21, OflagCompressed | (1<<13-1)<<49 | 0x1ff, 0x1ff, 8192*512 - 511},
		// Highest offset the 64k field holds.
		{"64k highest offset", 16, OflagCompressed | (1<<54 - 1), 1<<54 - 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := NewGeometry(tc.clusterBits, 4, false)
			d := tc.e.DecodeCompressed(&g)
			if d.Off != tc.off || d.Size != tc.size {
				t.Errorf("DecodeCompressed = %+v, want off %#x size %d", d, tc.off, tc.size)
			}
			e, err := EncodeCompressed(&g, tc.off, tc.size)
			if err != nil || e != tc.e {
				t.Errorf("EncodeCompressed = %#x, %v, want %#x", uint64(e), err, uint64(tc.e))
			}
		})
	}
}

func TestCompressed_RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for cb := uint32(MinClusterBits); cb <= MaxClusterBits; cb++ {
		g := NewGeometry(cb, 4, false)
		maxOff := uint64(1)<<g.CompressedOffBits - 1
		for i := 0; i < 2000; i++ {
			off := rng.Uint64N(maxOff + 1)
			switch i {
			case 0:
				off = 0
			case 1:
				off = maxOff
			}
			// The descriptor holds up to 2^(cb-8) sectors counted from
			// off's sector.
			limit := 2*g.ClusterSize - off&511
			n := 1 + rng.Uint64N(limit)
			if i == 2 {
				n = limit
			}
			e, err := EncodeCompressed(&g, HostOff(off), n)
			if err != nil {
				t.Fatalf("cb %d: EncodeCompressed(%#x, %d): %v", cb, off, n, err)
			}
			if e.Type() != ClusterCompressed || e.Copied() || e.Validate(&g, 3) != nil {
				t.Fatalf("cb %d: %#x not a valid compressed entry", cb, uint64(e))
			}
			d := e.DecodeCompressed(&g)
			if uint64(d.Off) != off || d.Size < n || d.Size-n >= 512 || (uint64(d.Off)+d.Size)&511 != 0 {
				t.Fatalf("cb %d: off %#x n %d decoded as %+v", cb, off, n, d)
			}
			e2, err := EncodeCompressed(&g, d.Off, d.Size)
			if err != nil || e2 != e {
				t.Fatalf("cb %d: re-encode %+v = %#x, %v, want %#x", cb, d, uint64(e2), err, uint64(e))
			}
			// One byte more than the field holds fails.
			if _, err := EncodeCompressed(&g, HostOff(off), limit+1); err == nil {
				t.Fatalf("cb %d: off %#x n %d accepted", cb, off, limit+1)
			}
		}
		for _, bad := range []struct {
			off   uint64
			n     uint64
			field string
		}{
			{maxOff + 1, 1, "compressed_offset"},
			{0, 0, "compressed_size"},
			{0, 2*g.ClusterSize + 1, "compressed_size"},
			{511, 2 * g.ClusterSize, "compressed_size"},
		} {
			_, err := EncodeCompressed(&g, HostOff(bad.off), bad.n)
			if err == nil {
				t.Fatalf("cb %d: EncodeCompressed(%#x, %d) accepted", cb, bad.off, bad.n)
			}
			var fe *FieldError
			if !typedError(err) || !errors.As(err, &fe) || fe.Field != bad.field {
				t.Errorf("cb %d: EncodeCompressed(%#x, %d): %v, want field %s", cb, bad.off, bad.n, err, bad.field)
			}
		}
	}
}

func TestSubclusterTypeOf(t *testing.T) {
	alloc := MakeL2(0x50000, true, false)
	const i = 3
	tests := []struct {
		name   string
		e      L2Entry
		bitmap uint64
		i      uint
		want   SubclusterType
		valid  bool // ValidateBitmap
	}{
		{"unallocated plain", 0, 0, i, SubUnallocatedPlain, true},
		{"unallocated plain, others zero", 0, SubZero(5), i, SubUnallocatedPlain, true},
		{"zero plain", 0, SubZero(i), i, SubZeroPlain, true},
		{"unallocated alloc", alloc, 0, i, SubUnallocatedAlloc, true},
		{"unallocated alloc, others set", alloc, SubAlloc(4) | SubZero(2), i, SubUnallocatedAlloc, true},
		{"zero alloc", alloc, SubZero(i), i, SubZeroAlloc, true},
		{"zero alloc, not copied", MakeL2(0x50000, false, false), SubZero(i), i, SubZeroAlloc, true},
		{"normal", alloc, SubAlloc(i), i, SubNormal, true},
		{"normal, all allocated", alloc, SubAllocAll, 31, SubNormal, true},
		{"compressed", OflagCompressed | 0x12345, 0, i, SubCompressed, true},
		{"invalid: compressed with bitmap", OflagCompressed | 0x12345, SubAlloc(0), i, SubInvalid, false},
		{"invalid: alloc and zero", alloc, SubAlloc(i) | SubZero(i), i, SubInvalid, false},
		// QEMU: (l2_bitmap >> 32) & l2_bitmap makes the whole entry invalid.
		{"invalid: alloc and zero elsewhere", alloc, SubAlloc(i) | SubAlloc(7) | SubZero(7), i, SubInvalid, false},
		{"invalid: unallocated with alloc", 0, SubAlloc(i), i, SubInvalid, false},
		// QEMU: QCOW_L2_BITMAP_ALL_ALLOC makes the whole entry invalid.
		{"invalid: unallocated with alloc elsewhere", 0, SubAlloc(9), i, SubInvalid, false},
		{"invalid: standard zero bit", alloc | OflagZero, SubAlloc(i), i, SubInvalid, true},
		{"invalid: index 32", alloc, SubAlloc(i), 32, SubInvalid, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SubclusterTypeOf(tc.e, tc.bitmap, tc.i); got != tc.want {
				t.Errorf("SubclusterTypeOf = %d, want %d", got, tc.want)
			}
			err := ValidateBitmap(tc.e, tc.bitmap)
			if tc.valid && err != nil {
				t.Errorf("ValidateBitmap: %v", err)
			}
			if !tc.valid {
				wantFieldError(t, err, "l2_bitmap", ErrCorrupt, "")
			}
		})
	}
	if SubAlloc(31) != 1<<31 || SubZero(0) != 1<<32 || SubZero(31) != 1<<63 {
		t.Errorf("SubAlloc/SubZero bits")
	}
}

// FuzzL2Entry: Type, Validate, DecodeCompressed and SubclusterTypeOf
// never panic; a valid compressed descriptor re-encodes to itself, and a
// valid standard entry or L1 entry rebuilds from its parts.
func FuzzL2Entry(f *testing.F) {
	f.Add(uint64(0), uint8(16), uint64(0), uint8(0))
	f.Add(uint64(OflagCompressed|3<<54|0x12345), uint8(16), uint64(0), uint8(3))
	f.Add(uint64(OflagCopied|0x50000), uint8(16), uint64(SubAlloc(3)), uint8(3))
	f.Add(uint64(0x50001), uint8(9), uint64(0), uint8(0))
	f.Add(uint64(OflagCompressed|1<<61|0x1001), uint8(9), uint64(0), uint8(0))
	f.Add(^uint64(0), uint8(21), ^uint64(0), uint8(255))
	f.Fuzz(func(t *testing.T, raw uint64, cb uint8, bitmap uint64, sc uint8) {
		clusterBits := MinClusterBits + uint32(cb)%(MaxClusterBits-MinClusterBits+1)
		g := NewGeometry(clusterBits, 4, false)
		gx := NewGeometry(clusterBits, 4, true)
		e := L2Entry(raw)
		_ = e.Type().String()
		errs := []error{e.Validate(&g, 2), e.Validate(&g, 3), e.Validate(&gx, 3)}
		for _, err := range errs {
			if err != nil && !typedError(err) {
				t.Fatalf("untyped error %v", err)
			}
		}
		d := e.DecodeCompressed(&g)
		if d.Size == 0 || d.Size > 2*g.ClusterSize {
			t.Fatalf("DecodeCompressed(%#x) size %d", raw, d.Size)
		}
		// ValidateBitmap and SubclusterTypeOf agree: a bad bitmap makes
		// every subcluster invalid, as in QEMU.
		st := SubclusterTypeOf(e, bitmap, uint(sc))
		if err := ValidateBitmap(e, bitmap); err != nil {
			if !typedError(err) || st != SubInvalid {
				t.Fatalf("bitmap %#x of %#x: %v, but subcluster %d is %d", bitmap, raw, err, sc, st)
			}
		} else if uint(sc) < 32 && st == SubInvalid && e&OflagZero == 0 {
			t.Fatalf("bitmap %#x valid for %#x but subcluster %d invalid", bitmap, raw, sc)
		}
		checkRangeType(t, e, bitmap, uint(sc)%SubclustersPerCluster)
		// An extended entry and its bitmap round-trip through a table,
		// a standard entry's reserved zero flag read as clear (QEMU).
		tbl := make([]byte, 2*gx.L2EntrySize)
		gx.PutL2(tbl, 1, e)
		gx.PutBitmap(tbl, 1, bitmap)
		want := e
		if !e.Compressed() {
			want &^= OflagZero
		}
		if gx.L2At(tbl, 1) != want || gx.BitmapAt(tbl, 1) != bitmap || gx.L2At(tbl, 0) != 0 {
			t.Fatalf("extended entry %#x/%#x does not read back", raw, bitmap)
		}
		if e.Compressed() {
			if (errs[1] == nil) != !e.Copied() {
				t.Fatalf("compressed %#x: Validate %v", raw, errs[1])
			}
			if errs[1] == nil {
				e2, err := EncodeCompressed(&g, d.Off, d.Size)
				if err != nil || e2 != e {
					t.Fatalf("%#x decodes to %+v, re-encodes to %#x, %v", raw, d, uint64(e2), err)
				}
			}
		} else if errs[1] == nil {
			if MakeL2(e.Offset(), e.Copied(), e.Zero()) != e {
				t.Fatalf("valid entry %#x does not rebuild", raw)
			}
		}
		l1 := L1Entry(raw)
		if err := l1.Validate(&g); err == nil {
			if MakeL1(l1.Offset(), l1.Copied()) != l1 {
				t.Fatalf("valid L1 entry %#x does not rebuild", raw)
			}
		} else if !typedError(err) {
			t.Fatalf("untyped error %v", err)
		}
		if err := ValidateReftableEntry(&g, HostOff(raw)); err != nil && !typedError(err) {
			t.Fatalf("untyped error %v", err)
		}
	})
}
