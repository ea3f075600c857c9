package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_InvalidL2EntriesLikeQemu: L2 entries with reserved bits, an
// unaligned offset, both, or COPIED set on a compressed cluster are
// reported as qemu-img check reports them (its words, one corruption per
// fault, the entry in the allocation statistics, its OFLAG_COPIED
// check), and -r leaks and -r all leave the same bytes as qemu-img's.
// qimg worded these its own way, left them out of the statistics and
// skipped their COPIED check.
func TestCheck_InvalidL2EntriesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	base := filepath.Join(d, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 32M 64k", base)
	plain := filepath.Join(d, "plain.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", plain, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", plain)
	comp := filepath.Join(d, "comp.qcow2")
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", plain, comp)
	for _, c := range []struct {
		img   string
		entry uint64 // the first entry of the L2 table at 0x40000
	}{
		{base, 0x8100000000050000},
		{base, 0x8000000000050200},
		{base, 0x8100000000050200},
		{base, 0x0100000000050200},
		{base, 0x0000000000050200},
		{base, 0x0100000000050000},
		{comp, 0xc000000000050000},
	} {
		b, err := os.ReadFile(c.img)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(b[0x40000:], c.entry)
		for _, mode := range [][]string{nil, {"-r", "leaks"}, {"-r", "all"}, {"--output=json"}} {
			name := fmt.Sprintf("%x %q", c.entry, mode)
			ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
			for _, p := range []string{ours, theirs} {
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
			qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
			if o != strings.ReplaceAll(qo, theirs, ours) || e != qe || code != qcode {
				t.Errorf("%s: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", name, code, e, o, qcode, qe, qo)
			}
			ob, _ := os.ReadFile(ours)
			qb, _ := os.ReadFile(theirs)
			if !bytes.Equal(ob, qb) {
				t.Errorf("%s: the images differ after the check (at %d)", name, testkit.FirstDiff(ob, qb))
			}
		}
	}
}
