package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_ProbedRawBaseLikeQemu: a base whose overlay names no
// backing format is probed, and when it probes as raw, committing into
// it is restricted as QEMU's raw driver restricts such a file: a commit
// that would write a first sector probing as another format fails with
// EPERM ("Block job failed: Operation not permitted"). qimg wrote the
// qcow2 header the overlay held at offset 0 into the raw base: the next
// open of the chain probed it as qcow2, whose backing file name can
// point at any host file. Output, exit codes, the base and the
// overlay's map are qemu-img's.
func TestCommit_ProbedRawBaseLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	hdr := qcow2Header(t, base)
	for i, c := range []struct {
		args  []string
		at0   string // what the overlay holds at offset 0: "hdr" or a pattern
		fmtOK bool   // the overlay keeps its backing format (raw)
		mid   bool   // a chain b.raw <- m.qcow2 <- o.qcow2, committed -b b.raw
	}{
		{args: []string{"{d}/o.qcow2"}, at0: "hdr"},
		{args: []string{"{d}/o.qcow2"}, at0: "write -P 0x51 0 512"},
		{args: []string{"{d}/o.qcow2"}, at0: "hdr", fmtOK: true},
		{args: []string{"-d", "{d}/o.qcow2"}, at0: "hdr"},
		{args: []string{"-b", "{d}/b.raw", "{d}/o.qcow2"}, at0: "hdr", mid: true},
		{args: []string{"-b", "{d}/b.raw", "{d}/o.qcow2"}, at0: "write -P 0x52 0 4k", mid: true},
	} {
		q, o := runBoth(t, base, "qemu-img", "commit", c.args, func(d string) {
			p := func(n string) string { return filepath.Join(d, n) }
			if err := os.WriteFile(p("hdr"), hdr[:512], 0o644); err != nil {
				t.Fatal(err)
			}
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p("b.raw"), "1M")
			below := "b.raw"
			if c.mid {
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.raw", "-F", "raw", p("m.qcow2"))
				testkit.DropBackingFormat(t, p("m.qcow2"))
				below = "m.qcow2"
			}
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", below, "-F", map[bool]string{false: "raw", true: "qcow2"}[c.mid], p("o.qcow2"))
			if !c.fmtOK && !c.mid {
				testkit.DropBackingFormat(t, p("o.qcow2"))
			}
			w := c.at0
			if w == "hdr" {
				w = "write -s " + p("hdr") + " 0 512"
			}
			testkit.MustRun(t, "qemu-io", "-c", w, "-c", "write -P 9 64k 64k", p("o.qcow2"))
		})
		same, err := sameFiles(q.dir, o.dir, "b.raw")
		if err != nil {
			t.Fatal(err)
		}
		qm := testkit.MustRun(t, "qemu-img", "map", "--output=json", filepath.Join(q.dir, "o.qcow2"))
		om := testkit.MustRun(t, "qemu-img", "map", "--output=json", filepath.Join(o.dir, "o.qcow2"))
		if !q.same(o) || !same || qm != om {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v\nbases equal: %v\noverlay maps:\n%s%s", i, c.args, q, o, same, qm, om)
		}
		testkit.MustRun(t, "qemu-img", "check", "-q", filepath.Join(q.dir, "o.qcow2"))
		if b, err := os.ReadFile(filepath.Join(q.dir, "b.raw")); err != nil || bytes.HasPrefix(b, []byte("QFI")) != (c.fmtOK && c.at0 == "hdr") {
			t.Errorf("case %d: the base starts %q (%v)", i, b[:min(len(b), 4)], err)
		}
	}
}
