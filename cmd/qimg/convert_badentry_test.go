package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_BadEntryOffsetLikeQemu: an unusable L2 entry in the middle
// of a run of good ones fails convert at its offset, in qemu-img's words,
// and --salvage warns about its sectors only, as qemu-img: a block status
// run ends before such an entry (QEMU's does), where qimg failed the
// whole query, so that convert named no offset and --salvage warned
// about every sector from the start of the disk.
func TestConvert_BadEntryOffsetLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	offsets := regexp.MustCompile(`block status at offset (\d+)`)
	for _, c := range []struct {
		xl2, bitmap bool // extended L2; the bad part is the subcluster bitmap
	}{{false, false}, {true, false}, {true, true}} {
		xl2 := c.xl2
		p := filepath.Join(d, "c.qcow2")
		args := []string{"create", "-q", "-f", "qcow2", p, "4M"}
		esz := int64(8)
		if xl2 {
			args = append(args, "-o", "extended_l2=on")
			esz = 16
		}
		testkit.MustRun(t, "qemu-img", args...)
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x61 0 4M", p)
		b := mustReadFile(t, p)
		l2 := binary.BigEndian.Uint64(b[binary.BigEndian.Uint64(b[40:]):]) & 0x00fffffffffffe00
		if c.bitmap {
			// Allocated and zero at once, in a cluster that continues
			// the host run: QEMU fails the whole lookup (offset 0).
			binary.BigEndian.PutUint64(b[int64(l2)+5*esz+8:], ^uint64(0))
		} else {
			binary.BigEndian.PutUint64(b[int64(l2)+5*esz:], 1<<63|0x50200) // guest cluster 5: unaligned
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, salvage := range []bool{false, true} {
			var opt []string
			if salvage {
				opt = []string{"--salvage"}
			}
			theirs, ours := filepath.Join(d, "theirs.raw"), filepath.Join(d, "ours.raw")
			_, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"convert"}, opt...), "-O", "raw", p, theirs)...)
			_, oe, ocode := runQ(t, append(append([]string{"convert"}, opt...), "-O", "raw", p, ours)...)
			var qo, oo []string
			for _, m := range offsets.FindAllStringSubmatch(qe, -1) {
				qo = append(qo, m[1])
			}
			for _, m := range offsets.FindAllStringSubmatch(oe, -1) {
				oo = append(oo, m[1])
			}
			// qemu-img walks the disk twice (its count of the sectors
			// to copy, then the copy), warning in both.
			slices.Sort(qo)
			qo = slices.Compact(qo)
			slices.Sort(oo)
			oo = slices.Compact(oo)
			if qcode != ocode || len(qo) == 0 || !slices.Equal(qo, oo) || strings.Contains(oe, "marking image as corrupt") {
				t.Errorf("%+v salvage %v: qimg exit %d, offsets %v:\n%s\nqemu-img exit %d, offsets %v", c, salvage, ocode, oo, oe, qcode, qo)
			}
			if salvage && !bytes.Equal(mustReadFile(t, theirs), mustReadFile(t, ours)) {
				t.Errorf("%+v: the salvaged outputs differ", c)
			}
		}
	}
}
