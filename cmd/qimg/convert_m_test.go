package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_CoroutinesLikeQemu: -m takes what qemu-img takes (a
// number in base 0 from 1 to 16) and refuses the rest in its words;
// qimg accepted any value (found by a helper's sweep).
func TestConvert_CoroutinesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	in := filepath.Join(d, "in.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", in, "1M")
	for _, m := range []string{"0", "17", "abc", "2k", "-1", "04", "0x10", "16", "1"} {
		args := []string{"convert", "-m", m, "-O", "qcow2", in, filepath.Join(d, "out.qcow2")}
		_, e1, c1 := runQ(t, args...)
		_, e2, c2 := testkit.Run(t, "qemu-img", args...)
		if strings.Replace(e1, "qimg: convert: ", "qemu-img: ", 1) != e2 || c1 != c2 {
			t.Errorf("-m %s: qimg exit %d %q, qemu-img exit %d %q", m, c1, e1, c2, e2)
		}
	}
}
