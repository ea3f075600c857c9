package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_SnapshotL1CopiedOnlyMatchesQemu: an internal snapshot's L1
// entry 0x8000000000000000 (COPIED, offset 0) names an L2 table at
// offset 0 to qemu-img check, which tests the entry and not its offset
// (check_refcounts_l1): it reads the header's cluster as that table and
// reports every entry it finds there; -r all then repairs one of them,
// which its overlap check refuses (the header), and fails with the
// image marked corrupt. qimg skipped the entry and found the image
// clean (or only the leak of the table the entry named before). The
// same output, exit code and image after, byte for byte, for an entry
// that named a table and for one that named none.
func TestCheck_SnapshotL1CopiedOnlyMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose: not checked at the end
	p := filepath.Join(d, "s.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4G")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 1G 64k", p)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", p)
	orig := mustReadFile(t, p)
	for _, idx := range []int64{0, 1} { // a table (leaked now), none
		damage(t, p, func(f imageFile) {
			f.write(0, orig)
			l1 := int64(f.u64(int64(f.u64(64)))) // the first snapshot's L1 table
			f.putU64(l1+8*idx, 1<<63)
		})
		b := mustReadFile(t, p)
		for _, mode := range [][]string{nil, {"-r", "leaks"}, {"-r", "all"}} {
			ours, theirs := twoCopies(t, d, b)
			o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
			qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
			e = strings.ReplaceAll(e, "qimg: check: ", "qemu-img: ")
			name := fmt.Sprintf("entry %d, check %q", idx, mode)
			if o != strings.ReplaceAll(qo, theirs, ours) || e != strings.ReplaceAll(qe, theirs, ours) || code != qcode {
				t.Errorf("%s: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", name, code, e, o, qcode, qe, qo)
			}
			if !strings.Contains(qe, "ERROR found l2 entry with reserved bits set") {
				t.Errorf("%s: qemu-img did not read the header as a table:\n%s", name, qe)
			}
			if !bytes.Equal(mustReadFile(t, ours), mustReadFile(t, theirs)) {
				t.Errorf("%s: the image differs from qemu-img's", name)
			}
		}
	}
}
