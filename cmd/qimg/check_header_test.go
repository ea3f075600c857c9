package main

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_DamagedHeaderMatchesQemu: headers QEMU opens only to check
// them (BDRV_O_CHECK), and snapshot entries whose L1 table cannot be
// one. qimg refused to open the first for check (exit 1: "Image does
// not contain a reference count table", "... in the header cluster"),
// reported a too-large snapshot L1 as an unparsable snapshot table (and
// info refused the image), read the L1 table of a snapshot that has
// none at its garbage offset (a check error), and left an entry it could
// not use out of the incomplete entries it reported (and counted the
// others from the wrong place). Now the reports are
// qemu-img's, and -r all rebuilds the missing refcount table as
// qemu-img does; -r leaks reports a refcount block outside the image
// and goes on, as qemu-img's. Where qimg's report of garbage differs in detail (a
// table read from the header cluster), the exit code is qemu-img's and
// nothing is written.
func TestCheck_DamagedHeaderMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	base := filepath.Join(d, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	qio(t, base, "write -P 0xaa 0 64k")
	snap := filepath.Join(d, "snap.qcow2")
	cp(t, base, snap)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", snap)
	qio(t, snap, "write -P 0xbb 0 64k")
	put32 := func(f imageFile, off int64, v uint32) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v)
		f.write(off, b[:])
	}
	endOffset := regexp.MustCompile(`Image end offset: \d+`)
	cases := []struct {
		name, from string
		mutate     func(imageFile)
		modes      [][]string
		same       bool // the output is qemu-img's, word for word
		pattern    string
	}{
		{"no refcount table", base, func(f imageFile) { put32(f, 56, 0) },
			[][]string{nil, {"-r", "leaks"}, {"-r", "all"}}, true, "0xaa"},
		{"no refcount table, its offset past the end of the file", base, func(f imageFile) {
			put32(f, 56, 0)
			f.putU64(48, 1<<56)
		}, [][]string{nil, {"-r", "all"}}, true, "0xaa"},
		{"L1 table in the header cluster", base, func(f imageFile) { f.putU64(40, 0) }, [][]string{nil}, true, ""},
		{"refcount table in the header cluster", base, func(f imageFile) { f.putU64(48, 0) }, [][]string{nil}, false, ""},
		{"snapshot table in the header cluster", snap, func(f imageFile) { f.putU64(64, 0) }, [][]string{nil}, true, ""},
		{"refcount table entry with reserved bits", base, func(f imageFile) {
			rt := int64(f.u64(48))
			f.putU64(rt, f.u64(rt)|1)
		}, [][]string{nil, {"-r", "leaks"}}, true, ""},
		{"reserved bits in the L1 and refcount tables", base, func(f imageFile) {
			rt, l1 := int64(f.u64(48)), int64(f.u64(40))
			f.putU64(rt, f.u64(rt)|1)
			f.putU64(l1, f.u64(l1)|2) // reported first, as qemu-img walks the L1 first
		}, [][]string{nil}, true, ""},
		{"snapshot L1 too large", snap, func(f imageFile) { put32(f, int64(f.u64(64))+8, 0x1000000) }, [][]string{nil}, true, ""},
		{"snapshot L1 of no entries anywhere", snap, func(f imageFile) {
			f.putU64(int64(f.u64(64)), 0x8000000000080000) // past 2^63
			put32(f, int64(f.u64(64))+8, 0)
		}, [][]string{nil, {"-r", "all"}}, true, "0xbb"},
		// -r leaks reports a refcount block outside the image and fixes
		// the leak elsewhere, as qemu-img (qimg asked for a rebuild,
		// "Check failed", exit 1 where qemu-img's is 2).
		{"refcount block outside the image, a leak", base, func(f imageFile) {
			rt, l1 := int64(f.u64(48)), int64(f.u64(40))
			rb := int64(f.u64(rt))
			f.putU64(rt+8, 1<<40)
			l2 := int64(f.u64(l1) & 0x00fffffffffffe00)
			k := int64(f.u64(l2)&0x00fffffffffffe00) / f.clusterSize()
			f.write(rb+2*k, []byte{0, 2})
		}, [][]string{nil, {"-r", "leaks"}}, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := filepath.Join(t.TempDir(), "orig.qcow2")
			cp(t, tc.from, orig)
			damage(t, orig, tc.mutate)
			for _, mode := range tc.modes {
				q, g := filepath.Join(d, tc.name+"q.qcow2"), filepath.Join(d, tc.name+"g.qcow2")
				cp(t, orig, q)
				cp(t, orig, g)
				args := append(append([]string{"check"}, mode...), q)
				qo, qe, qcode := testkit.Run(t, "qemu-img", args...)
				args[len(args)-1] = g
				o, e, code := runQ(t, args...)
				e = strings.Replace(e, "qimg: check: ", "qemu-img: ", 1)
				if code != qcode || (tc.same && (endOffset.ReplaceAllString(o, "") != endOffset.ReplaceAllString(qo, "") || e != qe)) {
					t.Errorf("%q: exit %d, qemu-img %d\nqimg:\n%s%s\nqemu-img:\n%s%s", mode, code, qcode, o, e, qo, qe)
				}
				if len(mode) == 0 && !bytes.Equal(mustReadFile(t, g), mustReadFile(t, orig)) {
					t.Errorf("%q changed the image", mode)
				}
				if len(mode) == 0 || mode[1] != "all" {
					continue
				}
				testkit.MustRun(t, "qemu-img", "check", g) // clean: exit 0
				if out := testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P "+tc.pattern+" 0 64k", g); strings.Contains(out, "verification failed") {
					t.Error(out)
				}
			}
		})
	}
	// The snapshot with a too-large L1 is listed, as qemu-img lists it.
	p := filepath.Join(d, "big.qcow2")
	cp(t, snap, p)
	damage(t, p, cases[7].mutate)
	qo, _, _ := testkit.Run(t, "qemu-img", "info", p)
	o, e, code := runQ(t, "info", p)
	if code != 0 || !strings.Contains(o, "s1") || !strings.Contains(qo, "s1") {
		t.Errorf("info: exit %d\n%s%s", code, o, e)
	}
	// -r all keeps the bitmaps of an image without a refcount table, as
	// qemu-img: the rebuild dropped their autoclear bit (nothing had
	// loaded them), and freed their clusters as leaks.
	p = filepath.Join(d, "bitmap.qcow2")
	cp(t, base, p)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	damage(t, p, cases[0].mutate)
	if o, e, code := runQ(t, "check", "-r", "all", p); code != 0 || strings.Contains(o+e, "Repairing cluster") {
		t.Errorf("check -r all with a bitmap: exit %d\n%s%s", code, o, e)
	}
	if _, e, code := testkit.Run(t, "qemu-img", "info", p); code != 0 || e != "" {
		t.Errorf("qemu-img info after the rebuild: exit %d: %s", code, e)
	}
	testkit.MustRun(t, "qemu-img", "check", p)
	if out := testkit.MustRun(t, "qemu-img", "info", "--output=json", p); !strings.Contains(out, `"name": "b0"`) {
		t.Errorf("the bitmap is gone:\n%s", out)
	}
	// A backing file without a refcount table: checked as qemu-img's
	// check opens the chain (BDRV_O_CHECK), not a failure to open.
	back, ov := filepath.Join(d, "back.qcow2"), filepath.Join(d, "ov.qcow2")
	cp(t, base, back)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", back, "-F", "qcow2", ov)
	damage(t, back, cases[0].mutate)
	qo, qe, qcode := testkit.Run(t, "qemu-img", "check", ov)
	o, e, code = runQ(t, "check", ov)
	if code != qcode || o != qo {
		t.Errorf("overlay over a damaged backing file: exit %d, qemu-img %d\n%s%s\nqemu-img:\n%s%s", code, qcode, o, e, qo, qe)
	}
	// A snapshot L1 of no entries that points inside the active L1
	// table: no table, so no overlap (qimg's open reported one).
	p = filepath.Join(d, "small.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "64M")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", p)
	damage(t, p, func(f imageFile) {
		e := int64(f.u64(64))
		f.putU64(e, f.u64(40)+512)
		put32(f, e+8, 0)
	})
	qo, qe, qcode = testkit.Run(t, "qemu-img", "check", p)
	o, e, code = runQ(t, "check", p)
	if code != qcode || o != qo || strings.Replace(e, "qimg: check: ", "qemu-img: ", 1) != qe {
		t.Errorf("empty snapshot L1 inside the active L1: exit %d, qemu-img %d\n%s%s\nqemu-img:\n%s%s", code, qcode, o, e, qo, qe)
	}
	// A refcount block two table entries name: reported at the second,
	// as qemu-img counts it (qimg reported both).
	p = filepath.Join(d, "twice.qcow2")
	cp(t, base, p)
	damage(t, p, func(f imageFile) {
		rt := int64(f.u64(48))
		f.putU64(rt+8, f.u64(rt))
	})
	qo, qe, _ = testkit.Run(t, "qemu-img", "check", p)
	o, e, _ = runQ(t, "check", p)
	for _, out := range []string{qo + qe, o + e} {
		if !strings.Contains(out, "ERROR refcount block 1 refcount=2") || strings.Contains(out, "ERROR refcount block 0 refcount") {
			t.Errorf("a block named twice:\n%s", out)
		}
	}
	// The refcount table entry with reserved bits: -r all rebuilds the
	// refcount structures (qemu-img 7.2's rebuild trips its own overlap
	// check there and fails), and the data reads as before.
	p = filepath.Join(d, "reserved.qcow2")
	cp(t, base, p)
	damage(t, p, cases[5].mutate)
	if o, e, code := runQ(t, "check", "-r", "all", p); code != 0 {
		t.Errorf("check -r all: exit %d\n%s%s", code, o, e)
	}
	testkit.MustRun(t, "qemu-img", "check", p)
	if out := testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0xaa 0 64k", p); strings.Contains(out, "verification failed") {
		t.Error(out)
	}
}
