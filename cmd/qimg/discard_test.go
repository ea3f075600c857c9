package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A discard, or a zeroing that may unmap, gives the freed clusters'
// space back to the file system as qemu-io's does (Q21): the file's
// allocation falls as far as QEMU's, the guest contents match and both
// images check clean. A discard of clusters a snapshot still holds
// frees nothing.
func TestIO_DiscardReturnsHostSpace(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	used := func(p string) int64 { return used(t, p) }
	for _, cmd := range []string{"discard 0 32M", "write -z -u 0 32M"} {
		ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", theirs, "64M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 32M", "-c", "write -P 2 32M 1M", theirs)
		b, err := os.ReadFile(theirs)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ours, b, 0o644); err != nil {
			t.Fatal(err)
		}
		before := used(ours)
		testkit.MustRun(t, "qemu-io", "-c", cmd, theirs)
		mustQ(t, "io", "-c", cmd, ours)
		if u, q := used(ours), used(theirs); before < 32<<20 || u > q+(1<<20) {
			t.Errorf("%s: the file uses %d B (%d B before), qemu-io's %d B", cmd, u, before, q)
		}
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		testkit.QemuCheck(t, ours)
		testkit.MustRun(t, "qemu-io", "-c", "read -P 0 0 32M", "-c", "read -P 2 32M 1M", ours)
	}
	// Shared with a snapshot: the clusters stay, and so does the data.
	p := filepath.Join(d, "snap.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 0 8M", p)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", p)
	before := used(p)
	mustQ(t, "io", "-c", "discard 0 8M", p)
	if u := used(p); u < before-(1<<20) {
		t.Errorf("discard of clusters a snapshot holds: the file went from %d B to %d B", before, u)
	}
	testkit.QemuCheck(t, p)
	testkit.MustRun(t, "qemu-img", "snapshot", "-a", "s", p)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 3 0 8M", p)
}

// A zeroing of part of a cluster that already reads as zeros allocates
// nothing, as in QEMU: qemu-img map shows no data there afterwards
// (found by an interop review: qimg wrote a cluster of zeros).
func TestIO_PartialZeroOfZerosAllocatesNothing(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "z.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 1M 4k", p)
	mustQ(t, "io", "-c", "write -z 4k 4k", "-c", "write -z 1M 512", "-c", "read -P 0 0 64k", "-c", "read -P 0 1M 512", "-c", "read -P 5 1049088 3584", p)
	out, _, _ := testkit.Run(t, "qemu-img", "map", "--output=json", p)
	var m []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	for _, e := range m {
		if e.Data && e.Start < 1<<20 {
			t.Errorf("data at [%d, +%d) after zeroing zeros:\n%s", e.Start, e.Length, out)
		}
	}
	testkit.QemuCheck(t, p)
}

// TestIO_DiscardV2OverlayKeepsData: a discard on a compat=0.10 overlay
// does nothing, as QEMU's (it has no zero clusters to hide the backing
// file with): qimg unallocated the clusters, and the backing file's
// stale data showed (found by a differential fuzz).
func TestIO_DiscardV2OverlayKeepsData(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	p := func(n string) string { return filepath.Join(d, n) }
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("b.qcow2"), "1M")
	qio(t, p("b.qcow2"), "write -P 0xaa 0 1M")
	for _, n := range []string{"o.qcow2", "q.qcow2"} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "b.qcow2", "-F", "qcow2", p(n), "1M")
		qio(t, p(n), "write -P 0x55 0 128k")
	}
	qimgIO(t, p("o.qcow2"), "discard 0 128k")
	qio(t, p("q.qcow2"), "discard 0 128k")
	qio(t, p("o.qcow2"), "read -P 0x55 0 128k")
	testkit.MustRun(t, "qemu-img", "compare", p("o.qcow2"), p("q.qcow2"))
}

// TestIO_ZeroWriteV2NoBackingUnallocates: a zero write over whole
// clusters of a compat=0.10 image without a backing file leaves them
// unallocated, as qemu-io's does (qimg wrote clusters of zeros; found
// by a differential fuzz).
func TestIO_ZeroWriteV2NoBackingUnallocates(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	p := func(n string) string { return filepath.Join(d, n) }
	for _, n := range []string{"o.qcow2", "q.qcow2"} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", p(n), "1M")
		qio(t, p(n), "write -P 1 0 256k")
	}
	qimgIO(t, p("o.qcow2"), "write -z 0 128k", "write -z -u 128k 64k", "write -z 200k 4k")
	qio(t, p("q.qcow2"), "write -z 0 128k", "write -z -u 128k 64k", "write -z 200k 4k")
	testkit.MustRun(t, "qemu-img", "compare", p("o.qcow2"), p("q.qcow2"))
	m1 := guestMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", p("o.qcow2")))
	m2 := guestMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", p("q.qcow2")))
	if m1 != m2 {
		t.Errorf("map\n%s\nqemu-img's:\n%s", m1, m2)
	}
}
