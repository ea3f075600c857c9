package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_UnalignedRefblockLikeQemu: a refcount table entry that is
// not cluster aligned makes qemu-img check report one internal error for
// each cluster the block should count ("Can't get refcount for cluster
// N"); qimg reported one for the whole block.
func TestCheck_UnalignedRefblockLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose: not checked at the end
	p := filepath.Join(d, "u.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.MustRun(t, "qemu-io", "-c", "write 0 192k", p)
	b := mustReadFile(t, p)
	rt := binary.BigEndian.Uint64(b[48:])
	binary.BigEndian.PutUint64(b[rt:], binary.BigEndian.Uint64(b[rt:])+0x200)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cannot := func(stderr string) (n []string) {
		for _, l := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(l, "Can't get refcount") {
				n = append(n, l)
			}
		}
		return n
	}
	for _, mode := range [][]string{nil, {"--output=json"}} {
		ours, theirs := twoCopies(t, d, b)
		o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
		if o != strings.ReplaceAll(qo, theirs, ours) || code != qcode || strings.Join(cannot(e), "\n") != strings.Join(cannot(qe), "\n") || len(cannot(qe)) != 8 {
			t.Errorf("check %q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", mode, code, e, o, qcode, qe, qo)
		}
	}
}

// TestCheck_UnalignedRefblockEventLikeQemu: QEMU's check meets the
// unaligned refcount block first when it asks for a refcount the block
// holds, and reports its corruption event there ("qcow2: Image is
// corrupt: Refblock offset 0x... unaligned (reftable index: 0); further
// non-fatal corruption events will be suppressed" read-only; "Marking
// image as corrupt" in a repair's read-write open, which sets the
// corrupt bit: -r leaks leaves it set, byte for byte as qemu-img's
// image). qimg printed no such line and marked nothing. -r all prints
// qemu-img's lines up to its rebuild (which fails in QEMU 7.2, on its
// own overlap check, where qimg's succeeds and clears the mark).
func TestCheck_UnalignedRefblockEventLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose: checked below where repaired
	p := filepath.Join(d, "u.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x5a 0 1M", p)
	b := mustReadFile(t, p)
	rt := binary.BigEndian.Uint64(b[48:])
	binary.BigEndian.PutUint64(b[rt:], binary.BigEndian.Uint64(b[rt:])+0x200)
	for _, mode := range [][]string{nil, {"-r", "leaks"}, {"-r", "all"}} {
		ours, theirs := twoCopies(t, d, b)
		o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
		e = strings.ReplaceAll(e, "qimg: check: ", "qemu-img: ")
		if mode == nil || mode[1] == "leaks" {
			if o+e != strings.ReplaceAll(qo+qe, theirs, ours) || code != qcode {
				t.Errorf("check %q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", mode, code, e, o, qcode, qe, qo)
			}
			if !bytes.Equal(mustReadFile(t, ours), mustReadFile(t, theirs)) {
				t.Errorf("check %q: the image differs from qemu-img's", mode)
			}
			continue
		}
		before, _, _ := strings.Cut(qe, "Rebuilding refcount structure")
		if !strings.HasPrefix(e, before+"Rebuilding refcount structure\n") || code != 0 {
			t.Errorf("check -r all: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", code, e, o, qcode, qe, qo)
		}
		testkit.QemuCheck(t, ours)
		testkit.MustRun(t, "qemu-io", "-c", "read -P 0x5a 0 1M", ours)
	}
}
