package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCompare_OddTailOffsetLikeQemu: a mismatch past the end of a raw
// file whose length is not whole sectors is reported where qemu-img
// compare reports it, counting sectors from the end of the file (where
// its block status run starts): 12340 for a 12340-byte file (qimg said
// 12288), with -p the same progress lines.
func TestCompare_OddTailOffsetLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	short, long := filepath.Join(d, "short.raw"), filepath.Join(d, "long.raw")
	if err := os.WriteFile(short, make([]byte, 12340), 0o644); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 12800)
	b[12500] = 1
	if err := os.WriteFile(long, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// With O_DIRECT QEMU's run starts on the file's block: 12288.
	for _, args := range [][]string{{short, long}, {long, short}, {"-p", short, long}, {"-s", short, long}, {"-T", "none", short, long}} {
		a := append([]string{"compare", "-f", "raw", "-F", "raw"}, args...)
		qo, _, qcode := testkit.Run(t, "qemu-img", a...)
		oo, _, code := runQ(t, a...)
		if oo != qo || code != qcode {
			t.Errorf("%q: qimg exit %d %q, qemu-img exit %d %q", args, code, oo, qcode, qo)
		}
	}
}
