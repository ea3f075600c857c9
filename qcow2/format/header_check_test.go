package format

import (
	"errors"
	"testing"
)

// TestParseHeaderForCheck: the open for check (QEMU's BDRV_O_CHECK) lets
// by a header without a refcount table and tables in the header cluster,
// which ParseHeader refuses; every other fault it refuses alike.
func TestParseHeaderForCheck(t *testing.T) {
	relaxed := []struct {
		name   string
		mutate []func([]byte)
		field  string
	}{
		{"no refcount table", []func([]byte){be32(56, 0)}, "refcount_table_clusters"},
		{"no refcount table, offset 0", []func([]byte){be32(56, 0), be64(48, 0)}, "refcount_table_clusters"},
		{"refcount table in the header cluster", []func([]byte){be64(48, 0)}, "refcount_table_offset"},
		{"L1 table in the header cluster", []func([]byte){be64(40, 0)}, "l1_table_offset"},
		{"snapshot table in the header cluster", []func([]byte){be32(60, 1), be64(64, 0)}, "snapshots_offset"},
	}
	for _, tc := range relaxed {
		t.Run(tc.name, func(t *testing.T) {
			b := readFixture(t, "v3.hdr")
			for _, m := range tc.mutate {
				m(b)
			}
			_, err := ParseHeader(b)
			wantFieldError(t, err, tc.field, ErrCorrupt, "")
			h, err := ParseHeaderForCheck(b)
			if err != nil {
				t.Fatalf("ParseHeaderForCheck: %v", err)
			}
			if h.RefcountTableClusters != be32At(b, 56) || uint64(h.L1TableOffset) != be64At(b, 40) {
				t.Errorf("header not as on disk: %+v", h)
			}
		})
	}
	kept := []struct {
		name   string
		mutate []func([]byte)
		field  string
		err    error
	}{
		{"cluster_bits 8", []func([]byte){be32(20, 8), be32(56, 0)}, "cluster_bits", ErrUnsupported},
		{"L1 misaligned", []func([]byte){be64(40, 0x30200)}, "l1_table_offset", ErrCorrupt},
		{"refcount table misaligned", []func([]byte){be64(48, 0x10200)}, "refcount_table_offset", ErrCorrupt},
		{"snapshot table misaligned", []func([]byte){be32(60, 1), be64(64, 0x200)}, "snapshots_offset", ErrCorrupt},
		{"too many snapshots", []func([]byte){be32(60, MaxSnapshots+1)}, "nb_snapshots", ErrCorrupt},
		{"refcount table too large", []func([]byte){be32(56, 0xffffffff)}, "refcount_table_clusters", ErrUnsupported},
	}
	for _, tc := range kept {
		t.Run(tc.name, func(t *testing.T) {
			b := readFixture(t, "v3.hdr")
			for _, m := range tc.mutate {
				m(b)
			}
			h, err := ParseHeaderForCheck(b)
			if h != nil || !errors.Is(err, tc.err) {
				t.Fatalf("ParseHeaderForCheck: %v, want %v", err, tc.err)
			}
			wantFieldError(t, err, tc.field, tc.err, "")
		})
	}
}

func be32At(b []byte, off int) uint32 { return be.Uint32(b[off:]) }
func be64At(b []byte, off int) uint64 { return be.Uint64(b[off:]) }
