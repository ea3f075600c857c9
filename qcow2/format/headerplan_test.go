package format

import (
	"bytes"
	"strings"
	"testing"
)

func planTestHeader(backing string) *Header {
	h := &Header{Version: 3, ClusterBits: 16, Size: 1 << 30, L1Size: 2, L1TableOffset: 0x30000,
		RefcountTableOffset: 0x10000, RefcountTableClusters: 1, RefcountOrder: 4,
		BackingFile: backing, BackingFormat: "qcow2",
		Extensions: []Extension{{Type: ExtFeatureNames, Data: FeatureNameTable()}}}
	return h
}

// TestPlanHeaderWrite_SameLayoutOneWrite: a rewrite that changes only
// fields of the first sector (here the L1 table's place) is one write of
// QEMU's layout, the feature name table kept, even when the extension
// list and the name run past the first sector (FM6).
func TestPlanHeaderWrite_SameLayoutOneWrite(t *testing.T) {
	h := planTestHeader("base.qcow2")
	old, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if HeaderUsedEnd(h) <= HeaderSector {
		t.Fatalf("the test header ends at %d, inside the first sector", HeaderUsedEnd(h))
	}
	h.L1TableOffset, h.L1Size = 0x50000, 4
	want, _ := (*h).Encode()
	ws, err := PlanHeaderWrite(old[:HeaderUsedEnd(h)], h)
	if err != nil || len(ws) != 1 || !bytes.Equal(ws[0], want) {
		t.Fatalf("PlanHeaderWrite: %d writes, %v; want the plain encoding once", len(ws), err)
	}
}

// TestPlanHeaderWrite_NewNameBeforeFirstSector: a new backing file name
// is written, with the old first sector, before the first sector that
// names it; no write changes a byte past the first sector that the old
// header reads (FM6).
func TestPlanHeaderWrite_NewNameBeforeFirstSector(t *testing.T) {
	h := planTestHeader("base.qcow2")
	old, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	oldH, _ := ParseHeader(old)
	h.BackingFile = strings.Repeat("n", 700)
	ws, err := PlanHeaderWrite(old[:HeaderUsedEnd(oldH)], h)
	if err != nil || len(ws) != 2 {
		t.Fatalf("PlanHeaderWrite: %d writes, %v; want 2", len(ws), err)
	}
	if !bytes.Equal(ws[0][:HeaderSector], old[:HeaderSector]) {
		t.Error("the first write changes the first sector")
	}
	for _, r := range headerUsed(oldH) {
		for p := max(r.off, HeaderSector); p < r.end; p++ {
			if ws[0][p] != old[p] || ws[1][p] != old[p] {
				t.Fatalf("byte %d, which the old header reads, changes", p)
			}
		}
	}
	for i, w := range ws {
		got, err := ParseHeader(w)
		if err != nil {
			t.Fatalf("write %d does not parse: %v", i, err)
		}
		want := []string{"base.qcow2", h.BackingFile}[i]
		if got.BackingFile != want || got.BackingFormat != "qcow2" {
			t.Errorf("after write %d: backing %q (%q), want %q", i, got.BackingFile, got.BackingFormat, want)
		}
	}
}
