package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readFixture loads testdata/name (made by testdata/gen.sh).
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtures lists every QEMU-made header in testdata.
func fixtures(t testing.TB) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join("testdata", "*.hdr"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// wantFieldError checks FM2: err is a *FieldError naming field and wraps
// sentinel; msg, if not empty, must appear in the message.
func wantFieldError(t *testing.T, err error, field string, sentinel error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s (%v)", field, sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %v", err, sentinel)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %q (%T) is not a *FieldError", err, err)
	}
	if fe.Field != field {
		t.Errorf("Field = %q, want %q (error %q)", fe.Field, field, err)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not mention %q", err, msg)
	}
}

// typedError reports whether err follows FM2.
func typedError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe) && fe.Field != "" &&
		(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrNotQcow2))
}

func TestParseHeader_Fixtures(t *testing.T) {
	const (
		G = 1 << 30
	)
	tests := []struct {
		file          string
		version       uint32
		clusterBits   uint32
		size          uint64
		l1Size        uint32
		refcountOrder uint32
		headerLength  uint32
		backingFile   string
		backingFormat string
		featureNames  bool
		incompat      uint64
		compat        uint64
		compression   uint8
		nbSnapshots   uint32
	}{
		{file: "v2.hdr", version: 2, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 4, headerLength: 72},
		{file: "v3.hdr", version: 3, clusterBits: 16, size: 4 * G, l1Size: 8, refcountOrder: 4, headerLength: 112, featureNames: true},
		// QEMU leaves the 384-byte feature name table out when it does
		// not fit in a 512-byte cluster.
		{file: "cluster512.hdr", version: 3, clusterBits: 9, size: 64 << 20, l1Size: 2048, refcountOrder: 4, headerLength: 112},
		{file: "cluster2m.hdr", version: 3, clusterBits: 21, size: 16 * G, l1Size: 1, refcountOrder: 4, headerLength: 112, featureNames: true},
		{file: "refcount1.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 0, headerLength: 112, featureNames: true},
		{file: "refcount64.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 6, headerLength: 112, featureNames: true},
		{file: "lazy.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 4, headerLength: 112, featureNames: true, compat: CompatLazyRefcounts},
		{file: "extl2.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 4, refcountOrder: 4, headerLength: 112, featureNames: true, incompat: IncompatExtendedL2},
		{file: "zstd.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 4, headerLength: 112, featureNames: true, incompat: IncompatCompression, compression: CompressionZstd},
		{file: "backing.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 4, headerLength: 112, featureNames: true, backingFile: "base.qcow2", backingFormat: "qcow2"},
		{file: "snapshot.hdr", version: 3, clusterBits: 16, size: 1 * G, l1Size: 2, refcountOrder: 4, headerLength: 112, featureNames: true, nbSnapshots: 1},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		seen[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			h, err := ParseHeader(readFixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			check := func(name string, got, want any) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			check("Version", h.Version, tc.version)
			check("ClusterBits", h.ClusterBits, tc.clusterBits)
			check("Size", h.Size, tc.size)
			check("L1Size", h.L1Size, tc.l1Size)
			check("RefcountOrder", h.RefcountOrder, tc.refcountOrder)
			check("HeaderLength", h.HeaderLength, tc.headerLength)
			check("BackingFile", h.BackingFile, tc.backingFile)
			check("BackingFormat", h.BackingFormat, tc.backingFormat)
			check("IncompatibleFeatures", h.IncompatibleFeatures, tc.incompat)
			check("CompatibleFeatures", h.CompatibleFeatures, tc.compat)
			check("AutoclearFeatures", h.AutoclearFeatures, uint64(0))
			check("ExtendedL2", h.ExtendedL2(), tc.incompat&IncompatExtendedL2 != 0)
			check("CompressionType", h.CompressionType, tc.compression)
			check("NbSnapshots", h.NbSnapshots, tc.nbSnapshots)
			check("CryptMethod", h.CryptMethod, uint32(CryptNone))
			check("DataFile", h.DataFile, "")
			check("UnknownFields", len(h.UnknownFields), 0)
			check("RefcountTableClusters", h.RefcountTableClusters, uint32(1))
			hasNames := false
			for _, e := range h.Extensions {
				if e.Type == ExtFeatureNames {
					hasNames = true
					// QEMU writes the same table we do.
					if !bytes.Equal(e.Data, FeatureNameTable()) {
						t.Errorf("feature name table differs from FeatureNameTable():\n%q\n%q", e.Data, FeatureNameTable())
					}
				}
			}
			check("feature name table present", hasNames, tc.featureNames)
			if tc.featureNames {
				check("FeatureName(0, 4)", FeatureName(h.Extensions, 0, 4), "extended L2 entries")
				check("FeatureName(1, 0)", FeatureName(h.Extensions, 1, 0), "lazy refcounts")
				check("FeatureName(0, 9)", FeatureName(h.Extensions, 0, 9), "")
			}
			g := h.Geometry()
			if !g.Aligned(h.L1TableOffset) || !g.Aligned(h.RefcountTableOffset) {
				t.Errorf("tables not aligned: %#x %#x", h.L1TableOffset, h.RefcountTableOffset)
			}
			check("L1EntriesFor(size)", g.L1EntriesFor(h.Size), uint64(h.L1Size))
			if tc.nbSnapshots > 0 && (h.SnapshotsOffset == 0 || !g.Aligned(h.SnapshotsOffset)) {
				t.Errorf("SnapshotsOffset = %#x", h.SnapshotsOffset)
			}
		})
	}
	for _, f := range fixtures(t) {
		if !seen[f] {
			t.Errorf("fixture %s has no expectations", f)
		}
	}
}

// TestHeader_Encode_QEMUBytes checks that Encode(Parse(b)) reproduces
// QEMU's cluster 0 byte for byte: the header, the extensions and the
// backing file name, and the zeros QEMU leaves after them.
func TestHeader_Encode_QEMUBytes(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f, func(t *testing.T) {
			b := readFixture(t, f)
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := h.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(enc)) != h.ClusterSize() {
				t.Errorf("len(Encode) = %d, want the cluster size %d", len(enc), h.ClusterSize())
			}
			n := min(len(b), len(enc))
			if i := firstDiff(b[:n], enc[:n]); i >= 0 {
				t.Fatalf("Encode differs from QEMU at byte %#x: got %#x, want %#x", i, enc[i], b[i])
			}
			if i := firstDiff(enc[n:], make([]byte, len(enc)-n)); i >= 0 {
				t.Errorf("Encode wrote non-zero byte at %#x past the fixture", n+i)
			}
			h2, err := ParseHeader(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, h2) {
				t.Errorf("Parse(Encode(h)) != h:\n%+v\n%+v", h, h2)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestHeader_Encode_PreservesUnknown checks FM3: unknown header fields
// (header_length 120) and unknown extension types survive a rewrite, in
// place.
func TestHeader_Encode_PreservesUnknown(t *testing.T) {
	base := readFixture(t, "backing.hdr")
	extra := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	unkExt := []byte{0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0}

	// insert puts ins at off, keeping the cluster size, and moves the
	// backing file name along.
	insert := func(b []byte, off int, ins []byte) []byte {
		out := append(append(append([]byte(nil), b[:off]...), ins...), b[off:len(b)-len(ins)]...)
		bfo := binary.BigEndian.Uint64(out[8:])
		binary.BigEndian.PutUint64(out[8:], bfo+uint64(len(ins)))
		return out
	}
	tests := []struct {
		name   string
		b      []byte
		fields []byte
		ext    bool
	}{
		{
			name: "header_length 120",
			b: func() []byte {
				b := insert(base, QEMUHeaderLen, extra)
				binary.BigEndian.PutUint32(b[100:], 120)
				return b
			}(),
			fields: extra,
		},
		{
			name: "unknown extension first",
			b:    insert(base, QEMUHeaderLen, unkExt),
			ext:  true,
		},
		{
			name: "unknown extension before the end marker",
			// backing format (8+8) and feature names (8+0x180)
			b:   insert(base, QEMUHeaderLen+16+8+0x180, unkExt),
			ext: true,
		},
		{
			name: "both",
			b: func() []byte {
				b := insert(insert(base, QEMUHeaderLen, extra), QEMUHeaderLen+8+16, unkExt)
				binary.BigEndian.PutUint32(b[100:], 120)
				return b
			}(),
			fields: extra,
			ext:    true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(h.UnknownFields, tc.fields) {
				t.Errorf("UnknownFields = %x, want %x", h.UnknownFields, tc.fields)
			}
			found := false
			for _, e := range h.Extensions {
				if e.Type == 0x12345678 {
					found = string(e.Data) == "hello"
				}
			}
			if found != tc.ext {
				t.Errorf("unknown extension found = %v, want %v (%+v)", found, tc.ext, h.Extensions)
			}
			if h.BackingFile != "base.qcow2" || h.BackingFormat != "qcow2" {
				t.Errorf("backing %q %q", h.BackingFile, h.BackingFormat)
			}
			enc, err := h.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(tc.b, enc); i >= 0 {
				t.Fatalf("Encode differs at byte %#x: got %#x, want %#x", i, enc[i], tc.b[i])
			}
		})
	}
}

// TestHeader_Encode_Normalises covers the fields Encode derives: known
// extensions come from BackingFormat/DataFile, and Extensions is updated
// so Parse(Encode(h)) == h.
func TestHeader_Encode_Normalises(t *testing.T) {
	fmtExt := func(s string) Extension { return Extension{Type: ExtBackingFmt, Data: []byte(s)} }
	unk := Extension{Type: 0x1234, Data: []byte("x")}
	tests := []struct {
		name          string
		exts          []Extension
		backingFormat string
		dataFile      string
		want          []Extension
	}{
		{name: "none", want: nil},
		{name: "added", backingFormat: "raw", want: []Extension{fmtExt("raw")}},
		{name: "replaced in place", exts: []Extension{unk, fmtExt("qcow2"), unk}, backingFormat: "raw",
			want: []Extension{unk, fmtExt("raw"), unk}},
		{name: "removed", exts: []Extension{fmtExt("qcow2"), unk}, want: []Extension{unk}},
		{name: "duplicate dropped", exts: []Extension{fmtExt("a"), unk, fmtExt("b")}, backingFormat: "b",
			want: []Extension{fmtExt("b"), unk}},
		{name: "data file", dataFile: "data.raw",
			want: []Extension{{Type: ExtDataFile, Data: []byte("data.raw")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader(readFixture(t, "v3.hdr"))
			if err != nil {
				t.Fatal(err)
			}
			h.Extensions = tc.exts
			h.BackingFormat = tc.backingFormat
			h.DataFile = tc.dataFile
			h.BackingFile = "base"
			enc, err := h.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h.Extensions, tc.want) {
				t.Errorf("Extensions = %+v, want %+v", h.Extensions, tc.want)
			}
			h2, err := ParseHeader(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, h2) {
				t.Errorf("Parse(Encode(h)) != h:\n%+v\n%+v", h, h2)
			}
		})
	}
}

func TestHeader_Encode_Errors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(h *Header)
		field  string
	}{
		{"cluster_bits 8", func(h *Header) { h.ClusterBits = 8 }, "cluster_bits"},
		{"cluster_bits 64", func(h *Header) { h.ClusterBits = 64 }, "cluster_bits"},
		{"version 4", func(h *Header) { h.Version = 4 }, "version"},
		{"v2 refcount order", func(h *Header) { h.Version = 2; h.RefcountOrder = 6 }, "refcount_order"},
		{"v2 features", func(h *Header) { h.Version = 2 }, "incompatible_features"},
		{"end marker in list", func(h *Header) { h.Extensions = append(h.Extensions, Extension{Type: ExtEnd}) }, "header_extension"},
		{"extensions too big", func(h *Header) {
			h.Extensions = append(h.Extensions, Extension{Type: 7, Data: make([]byte, 65536-112-8)})
		}, "header_extension"},
		{"backing name too long", func(h *Header) { h.BackingFile = strings.Repeat("a", 1024) }, "backing_file_size"},
		{"backing name does not fit", func(h *Header) {
			// Without the (optional) feature-name table, which Encode
			// would drop to make room.
			var keep []Extension
			for _, e := range h.Extensions {
				if e.Type != ExtFeatureNames {
					keep = append(keep, e)
				}
			}
			h.Extensions = append(keep, Extension{Type: 7, Data: make([]byte, 65536-112-8-16-16)})
			h.BackingFile = strings.Repeat("n", 25) // 24 bytes are left
		}, "backing_file_offset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader(readFixture(t, "lazy.hdr"))
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(h)
			before := *h
			_, err = h.Encode()
			wantFieldError(t, err, tc.field, ErrUnsupported, "")
			if h.HeaderLength != before.HeaderLength || h.BackingFileOffset != before.BackingFileOffset ||
				!reflect.DeepEqual(h.Extensions, before.Extensions) {
				t.Errorf("failed Encode modified the header")
			}
		})
	}
}

func be32(off int, v uint32) func([]byte) {
	return func(b []byte) { binary.BigEndian.PutUint32(b[off:], v) }
}

func be64(off int, v uint64) func([]byte) {
	return func(b []byte) { binary.BigEndian.PutUint64(b[off:], v) }
}

// TestParseHeader_Hostile checks FM1 and FM2 on damaged headers: each gives
// a *FieldError naming the field, wrapping ErrCorrupt or ErrUnsupported.
func TestParseHeader_Hostile(t *testing.T) {
	// Feature table of v3.hdr: extension at 0x70, data at 0x78, 8
	// entries of 48 bytes, end marker at 0x1f8.
	named := func(b []byte) {
		binary.BigEndian.PutUint32(b[0x74:], 0x180+48)
		b[0x1f8] = 0
		b[0x1f9] = 5
		copy(b[0x1fa:], "frobnicator")
		binary.BigEndian.PutUint64(b[72:], 1<<5)
	}
	tests := []struct {
		name     string
		fixture  string
		mutate   []func([]byte)
		truncate int
		field    string
		err      error
		msg      string
	}{
		{name: "short", fixture: "v3.hdr", truncate: 71, field: "header_length", err: ErrCorrupt}, // QEMU reads zeros past the end: header_length 0
		{name: "empty", fixture: "v3.hdr", truncate: -1, field: "magic", err: ErrNotQcow2},
		{name: "v3 short", fixture: "v3.hdr", truncate: 100, field: "header_length", err: ErrCorrupt},
		{name: "header past end", fixture: "v3.hdr", truncate: 108, field: "header_length", err: ErrCorrupt},
		{name: "bad magic", fixture: "v3.hdr", mutate: []func([]byte){be32(0, 0x514649fa)}, field: "magic", err: ErrNotQcow2},
		{name: "version 1", fixture: "v3.hdr", mutate: []func([]byte){be32(4, 1)}, field: "version", err: ErrUnsupported},
		{name: "version 4", fixture: "v3.hdr", mutate: []func([]byte){be32(4, 4)}, field: "version", err: ErrUnsupported},
		{name: "cluster_bits 8", fixture: "v3.hdr", mutate: []func([]byte){be32(20, 8)}, field: "cluster_bits", err: ErrUnsupported},
		{name: "cluster_bits 22", fixture: "v3.hdr", mutate: []func([]byte){be32(20, 22)}, field: "cluster_bits", err: ErrUnsupported},
		{name: "cluster_bits huge", fixture: "v2.hdr", mutate: []func([]byte){be32(20, 0xffffffff)}, field: "cluster_bits", err: ErrUnsupported},
		{name: "l1_size huge", fixture: "v3.hdr", mutate: []func([]byte){be32(36, 0xffffffff)}, field: "l1_size", err: ErrUnsupported},
		{name: "l1_size just over 32 MiB", fixture: "v3.hdr", mutate: []func([]byte){be32(36, MaxL1Bytes/8+1)}, field: "l1_size", err: ErrUnsupported},
		{name: "l1_size too small", fixture: "v3.hdr", mutate: []func([]byte){be32(36, 7)}, field: "l1_size", err: ErrCorrupt},
		{name: "l1_size zero", fixture: "v2.hdr", mutate: []func([]byte){be32(36, 0)}, field: "l1_size", err: ErrCorrupt},
		{name: "l1_size small extended L2", fixture: "extl2.hdr", mutate: []func([]byte){be32(36, 2)}, field: "l1_size", err: ErrCorrupt},
		{name: "l1_table_offset misaligned", fixture: "v3.hdr", mutate: []func([]byte){be64(40, 0x30200)}, field: "l1_table_offset", err: ErrCorrupt},
		{name: "l1_table_offset misaligned empty", fixture: "v3.hdr", mutate: []func([]byte){be64(24, 0), be32(36, 0), be64(40, 0x30001)}, field: "l1_table_offset", err: ErrCorrupt},
		{name: "l1_table_offset zero", fixture: "v3.hdr", mutate: []func([]byte){be64(40, 0)}, field: "l1_table_offset", err: ErrCorrupt},
		{name: "l1_table_offset past 2^63", fixture: "v3.hdr", mutate: []func([]byte){be64(40, 0xffffffffffff0000)}, field: "l1_table_offset", err: ErrCorrupt},
		{name: "refcount_table_clusters 0", fixture: "v3.hdr", mutate: []func([]byte){be32(56, 0)}, field: "refcount_table_clusters", err: ErrCorrupt},
		{name: "refcount_table_clusters huge", fixture: "v3.hdr", mutate: []func([]byte){be32(56, 0xffffffff)}, field: "refcount_table_clusters", err: ErrUnsupported},
		{name: "refcount_table_clusters just over 8 MiB", fixture: "v3.hdr", mutate: []func([]byte){be32(56, MaxReftableSize>>16+1)}, field: "refcount_table_clusters", err: ErrUnsupported},
		{name: "refcount_table_offset misaligned", fixture: "v3.hdr", mutate: []func([]byte){be64(48, 0x10200)}, field: "refcount_table_offset", err: ErrCorrupt},
		{name: "refcount_table_offset zero", fixture: "v3.hdr", mutate: []func([]byte){be64(48, 0)}, field: "refcount_table_offset", err: ErrCorrupt},
		{name: "refcount_table_offset past 2^63", fixture: "v3.hdr", mutate: []func([]byte){be64(48, 0x7fffffffffff0000)}, field: "refcount_table_offset", err: ErrCorrupt},
		{name: "refcount_order 7", fixture: "v3.hdr", mutate: []func([]byte){be32(96, 7)}, field: "refcount_order", err: ErrUnsupported},
		{name: "incompatible bit 5", fixture: "v3.hdr", mutate: []func([]byte){be64(72, 1<<5)}, field: "incompatible_features", err: ErrUnsupported, msg: "bit 5 (unknown)"},
		{name: "incompatible bit 5 named", fixture: "v3.hdr", mutate: []func([]byte){named}, field: "incompatible_features", err: ErrUnsupported, msg: "bit 5 (frobnicator)"},
		{name: "incompatible bits 5 and 63", fixture: "v3.hdr", mutate: []func([]byte){be64(72, 1<<5|1<<63|IncompatDirty)}, field: "incompatible_features", err: ErrUnsupported, msg: "bit 63"},
		{name: "header_length 108", fixture: "v3.hdr", mutate: []func([]byte){be32(100, 108)}, field: "header_length", err: ErrCorrupt},
		{name: "header_length 96", fixture: "v3.hdr", mutate: []func([]byte){be32(100, 96)}, field: "header_length", err: ErrCorrupt},
		{name: "header_length past cluster", fixture: "cluster512.hdr", mutate: []func([]byte){be32(100, 520)}, field: "header_length", err: ErrCorrupt},
		{name: "extension length past cluster", fixture: "v3.hdr", mutate: []func([]byte){be32(0x74, 0x10000)}, field: "header_extension", err: ErrCorrupt},
		{name: "extension length huge", fixture: "v3.hdr", mutate: []func([]byte){be32(0x74, 0xffffffff)}, field: "header_extension", err: ErrCorrupt},
		{name: "extension past 512-byte cluster", fixture: "cluster512.hdr",
			mutate: []func([]byte){be32(0x70, 7), be32(0x74, 380), be32(0x1f8, 7), be32(0x1fc, 9)},
			field:  "header_extension", err: ErrCorrupt},
		{name: "extension header past backing name", fixture: "backing.hdr",
			// the list ends at 0x208; the name now starts 4 bytes later
			mutate: []func([]byte){be32(0x208, 9), be64(8, 0x20c)},
			field:  "header_extension", err: ErrCorrupt},
		{name: "backing name past cluster", fixture: "backing.hdr", mutate: []func([]byte){be64(8, 0xfffc)}, field: "backing_file_offset", err: ErrCorrupt},
		{name: "backing name far past cluster", fixture: "backing.hdr", mutate: []func([]byte){be64(8, 0xffffffffffffffff)}, field: "backing_file_offset", err: ErrCorrupt},
		{name: "backing name in header", fixture: "backing.hdr", mutate: []func([]byte){be64(8, 0x40)}, field: "backing_file_offset", err: ErrCorrupt},
		{name: "backing name too long", fixture: "backing.hdr", mutate: []func([]byte){be32(16, 1024)}, field: "backing_file_size", err: ErrCorrupt},
		{name: "nb_snapshots huge", fixture: "snapshot.hdr", mutate: []func([]byte){be32(60, 0xffffffff)}, field: "nb_snapshots", err: ErrCorrupt},
		{name: "snapshots_offset misaligned", fixture: "snapshot.hdr", mutate: []func([]byte){be64(64, 0x80008)}, field: "snapshots_offset", err: ErrCorrupt},
		{name: "snapshots_offset zero", fixture: "snapshot.hdr", mutate: []func([]byte){be64(64, 0)}, field: "snapshots_offset", err: ErrCorrupt},
		{name: "snapshots_offset past 2^63", fixture: "snapshot.hdr", mutate: []func([]byte){be64(64, 0xffffffffffff0000)}, field: "snapshots_offset", err: ErrCorrupt},
		{name: "compression type 2", fixture: "zstd.hdr", mutate: []func([]byte){func(b []byte) { b[104] = 2 }}, field: "compression_type", err: ErrUnsupported},
		{name: "zstd without bit", fixture: "zstd.hdr", mutate: []func([]byte){be64(72, 0)}, field: "compression_type", err: ErrCorrupt},
		{name: "bit without zstd", fixture: "v3.hdr", mutate: []func([]byte){be64(72, IncompatCompression)}, field: "compression_type", err: ErrCorrupt},
		{name: "extended L2 with small clusters", fixture: "cluster512.hdr", mutate: []func([]byte){be64(72, IncompatExtendedL2)}, field: "cluster_bits", err: ErrCorrupt},
		{name: "size huge", fixture: "v3.hdr", mutate: []func([]byte){be64(24, 1<<62+1)}, field: "size", err: ErrUnsupported},
		{name: "crypt method 3", fixture: "v3.hdr", mutate: []func([]byte){be32(32, 3)}, field: "crypt_method", err: ErrCorrupt},
		// LUKS on v2 is QEMU's too (compat=0.10); not without its extension.
		{name: "LUKS on v2 without the crypto extension", fixture: "v2.hdr", mutate: []func([]byte){be32(32, CryptLUKS)}, field: "crypto_header", err: ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := readFixture(t, tc.fixture)
			if _, err := ParseHeader(b); err != nil {
				t.Fatalf("unmodified fixture: %v", err)
			}
			switch {
			case tc.truncate < 0:
				b = nil
			case tc.truncate > 0:
				b = b[:tc.truncate]
			}
			for _, m := range tc.mutate {
				m(b)
			}
			h, err := ParseHeader(b)
			if h != nil {
				t.Errorf("ParseHeader returned a header with error %v", err)
			}
			wantFieldError(t, err, tc.field, tc.err, tc.msg)
		})
	}
}

// TestParseHeader_Tolerated covers layouts QEMU accepts that are not
// QEMU's own output.
func TestParseHeader_Tolerated(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		mutate  []func([]byte)
		check   func(t *testing.T, h *Header)
	}{
		{name: "header_length 104", fixture: "v3.hdr",
			// move the extensions 8 bytes down
			mutate: []func([]byte){be32(100, 104), func(b []byte) { copy(b[104:], b[112:]) }},
			check: func(t *testing.T, h *Header) {
				if h.HeaderLength != 104 || h.CompressionType != 0 || len(h.Extensions) != 1 {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "no end marker before backing name", fixture: "backing.hdr",
			// name right after the feature table, where the end marker was
			mutate: []func([]byte){be64(8, 0x208), func(b []byte) { copy(b[0x208:], "base.qcow2\x00\x00\x00\x00\x00\x00") }},
			check: func(t *testing.T, h *Header) {
				if h.BackingFile != "base.qcow2" || h.BackingFormat != "qcow2" || len(h.Extensions) != 2 {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "extension padding runs into backing name", fixture: "backing.hdr",
			// backing format "qcow2" (5 bytes at 0x78) is the last
			// extension; the name starts at 0x7d
			mutate: []func([]byte){be64(8, 0x7d), func(b []byte) { copy(b[0x7d:], "base.qcow2\x00\x00\x00\x00\x00") }},
			check: func(t *testing.T, h *Header) {
				if h.BackingFile != "base.qcow2" || h.BackingFormat != "qcow2" || len(h.Extensions) != 1 {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "unknown autoclear and compatible bits", fixture: "v3.hdr",
			mutate: []func([]byte){be64(80, 1<<40|CompatLazyRefcounts), be64(88, 1<<7|AutoclearBitmaps)},
			check: func(t *testing.T, h *Header) {
				if h.CompatibleFeatures != 1<<40|CompatLazyRefcounts {
					t.Errorf("compatible %#x", h.CompatibleFeatures)
				}
				if !h.ClearUnknownAutoclear() || h.AutoclearFeatures != AutoclearBitmaps {
					t.Errorf("autoclear %#x", h.AutoclearFeatures)
				}
				if h.ClearUnknownAutoclear() {
					t.Errorf("second ClearUnknownAutoclear reported bits")
				}
			}},
		{name: "short buffer", fixture: "v3.hdr", mutate: []func([]byte){}, check: func(t *testing.T, h *Header) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := readFixture(t, tc.fixture)
			for _, m := range tc.mutate {
				m(b)
			}
			if tc.name == "short buffer" {
				b = b[:0x200]
			}
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, h)
			enc, err := h.Encode()
			if err != nil {
				t.Fatal(err)
			}
			h2, err := ParseHeader(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, h2) {
				t.Errorf("Parse(Encode(h)) != h:\n%+v\n%+v", h, h2)
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	err := corrupt("l1_size", 7, "too small for %d", 8)
	if got, want := err.Error(), "qcow2: image is corrupt: l1_size = 0x7: too small for 8"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if errors.Is(err, ErrUnsupported) || !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong sentinel")
	}
}

// FuzzParseHeader: ParseHeader never panics; every error is typed (FM2);
// a parsed header encodes (or fails with a typed error) and re-parses to
// an equal header, whose encoding is the same bytes.
func FuzzParseHeader(f *testing.F) {
	for _, name := range fixtures(f) {
		b := readFixture(f, name)
		f.Add(b)
		// Short seeds keep the mutator busy where the header is.
		f.Add(b[:min(len(b), 0x240)])
	}
	// A 512-byte-cluster image with every kind of extension and a
	// backing file name, so that mutations reach duplicate, empty and
	// unknown extensions quickly.
	h, err := ParseHeader(readFixture(f, "cluster512.hdr"))
	if err != nil {
		f.Fatal(err)
	}
	h.BackingFile, h.BackingFormat, h.DataFile = "base", "qcow2", "d"
	h.IncompatibleFeatures |= IncompatDataFile
	h.UnknownFields = []byte{1, 2, 3, 4, 5, 6, 7, 8}
	h.Extensions = []Extension{{Type: ExtBackingFmt}, {Type: 0x1234, Data: []byte("x")}, {Type: ExtDataFile}}
	seed, err := h.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	// An extended-L2 header with a backing file, and one whose
	// cluster_bits mutate below 14.
	x, err := ParseHeader(readFixture(f, "extl2.hdr"))
	if err != nil {
		f.Fatal(err)
	}
	x.BackingFile, x.BackingFormat = "base.qcow2", "qcow2"
	if seed, err = x.Encode(); err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		// The open for check lets more by, never less, and parses
		// what both accept alike.
		hc, cerr := ParseHeaderForCheck(b)
		if cerr != nil && (hc != nil || !typedError(cerr)) {
			t.Fatalf("ParseHeaderForCheck: header %v, error %v", hc != nil, cerr)
		}
		h, err := ParseHeader(b)
		if err == nil && (cerr != nil || !reflect.DeepEqual(h, hc)) {
			t.Fatalf("ParseHeaderForCheck differs from ParseHeader: %v\n%+v\n%+v", cerr, h, hc)
		}
		if err != nil {
			if h != nil {
				t.Fatalf("header and error %v", err)
			}
			if !typedError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if g := h.Geometry(); h.ExtendedL2() != g.ExtendedL2 || (g.ExtendedL2 && (h.ClusterBits < 14 || g.L2EntrySize != 16 || g.Subclusters() != SubclustersPerCluster)) {
			t.Fatalf("extended L2 header %#x with cluster_bits %d: geometry %+v", h.IncompatibleFeatures, h.ClusterBits, g)
		}
		enc, err := h.Encode()
		if err != nil {
			if !typedError(err) {
				t.Fatalf("untyped Encode error %v", err)
			}
			return
		}
		h2, err := ParseHeader(enc)
		if err != nil {
			t.Fatalf("Parse(Encode(h)): %v\n%+v", err, h)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("Parse(Encode(h)) != h:\n%+v\n%+v", h, h2)
		}
		enc2, err := h2.Encode()
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode not stable: %v", err)
		}
		checkHeaderPlan(t, b, h)
	})
}

// checkHeaderPlan rewrites the header of b (parsed as h) with another
// backing file name and version, and checks the plan (FM6): every write
// but the last keeps the first sector, no write changes a byte past it
// that the old header reads, the last write parses as the new header
// and every earlier one as the old.
func checkHeaderPlan(t *testing.T, b []byte, _ *Header) {
	t.Helper()
	h, err := ParseHeader(b) // as on the media (Encode changed the caller's)
	if err != nil {
		t.Fatal(err)
	}
	nh := *h
	nh.Extensions = append([]Extension(nil), h.Extensions...)
	if len(b) > 0 && b[len(b)-1]&1 != 0 && nh.Version == 2 {
		nh.Version = 3
	}
	nh.BackingFile = strings.Repeat("n", int(b[0])*4+1)
	if nh.BackingFormat == "" {
		nh.BackingFormat = "qcow2"
	}
	ws, safe, err := planHeaderWrite(b, &nh)
	if err != nil {
		return // a header Encode refuses
	}
	if len(ws) == 0 {
		t.Fatal("no writes")
	}
	last, err := ParseHeader(ws[len(ws)-1])
	if err != nil || last.BackingFile != nh.BackingFile || last.Version != nh.Version {
		t.Fatalf("last write: %v (backing %d bytes, version %d)", err, len(nh.BackingFile), nh.Version)
	}
	if !safe {
		return
	}
	for i, w := range ws {
		if i < len(ws)-1 {
			if !bytes.Equal(w[:HeaderSector], b[:min(len(b), HeaderSector)]) && len(b) >= HeaderSector {
				t.Fatalf("write %d of %d changes the first sector", i, len(ws))
			}
			if oh, err := ParseHeader(w); err != nil || oh.BackingFile != h.BackingFile {
				t.Fatalf("write %d of %d: %v", i, len(ws), err)
			}
		}
		for _, r := range headerUsed(h) {
			for p := max(r.off, HeaderSector); p < r.end && p < uint64(len(b)) && p < uint64(len(w)); p++ {
				if w[p] != b[p] {
					t.Fatalf("write %d changes byte %d, which the old header reads", i, p)
				}
			}
		}
	}
}

func BenchmarkParseHeader(b *testing.B) {
	for _, name := range []string{"v3.hdr", "backing.hdr"} {
		buf := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := ParseHeader(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHeader_Encode_DropsFeatureNames: with 512-byte clusters and a
// backing file the feature-name table does not fit; Encode leaves it out
// (as QEMU) instead of failing, and keeps everything else.
func TestHeader_Encode_DropsFeatureNames(t *testing.T) {
	h := &Header{Version: 3, ClusterBits: 9, Size: 64 << 10, L1Size: 2, L1TableOffset: 3 << 9,
		RefcountTableOffset: 1 << 9, RefcountTableClusters: 1, RefcountOrder: 4,
		BackingFile: "backing.raw", BackingFormat: "raw",
		Extensions: []Extension{{Type: ExtFeatureNames, Data: FeatureNameTable()}}}
	b, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.BackingFile != "backing.raw" || p.BackingFormat != "raw" {
		t.Fatalf("backing %q (%q)", p.BackingFile, p.BackingFormat)
	}
	for _, e := range p.Extensions {
		if e.Type == ExtFeatureNames {
			t.Fatal("feature-name table kept though it cannot fit")
		}
	}
	// With room for it, it stays.
	h.ClusterBits = 16
	h.L1TableOffset, h.RefcountTableOffset = 3<<16, 1<<16
	h.Extensions = []Extension{{Type: ExtFeatureNames, Data: FeatureNameTable()}}
	if b, err = h.Encode(); err != nil {
		t.Fatal(err)
	}
	if p, err = ParseHeader(b); err != nil {
		t.Fatal(err)
	}
	if len(p.Extensions) < 2 || p.Extensions[0].Type != ExtFeatureNames {
		t.Fatalf("extensions %+v", p.Extensions)
	}
}
