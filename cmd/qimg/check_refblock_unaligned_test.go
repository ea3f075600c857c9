package main

import (
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
