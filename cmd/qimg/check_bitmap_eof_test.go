package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestCheck_BitmapTablePastEOFLikeQemu: a bitmap table wholly past the
// end of the file reads as zeros, as QEMU reads it: one corruption (its
// reference past the end), the clusters of the lost table and of the
// data it named leaked, and -r leaks frees them. qimg counted one more
// corruption ("ERROR bitmaps: ... past the end of the file") and refused
// every repair.
func TestCheck_BitmapTablePastEOFLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir() // damaged on purpose: not checked at the end
	p := filepath.Join(d, "b.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 64k", p)
	damageBitmap(t, p, func(e *format.BitmapEntry) { e.TableOffset = 1 << 28 })
	b := mustReadFile(t, p)
	for _, mode := range [][]string{nil, {"--output=json"}} {
		ours, theirs := twoCopies(t, d, b)
		o, e, code := runQ(t, append(append([]string{"check"}, mode...), ours)...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"check"}, mode...), theirs)...)
		if o != strings.ReplaceAll(qo, theirs, ours) || e != qe || code != qcode {
			t.Errorf("check %q: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", mode, code, e, o, qcode, qe, qo)
		}
	}
	// qemu-img -r leaks also stores the bitmap anew on its close (a new
	// table, the image then clean); qimg keeps the bitmaps as they are:
	// only the leaks are compared.
	ours, _ := twoCopies(t, d, b)
	o, e, code := runQ(t, "check", "-r", "leaks", ours)
	if code != 2 || !strings.Contains(o, "    2 leaked clusters\n") || strings.Contains(e, "need to rebuild") {
		t.Errorf("check -r leaks: exit %d, want the two leaks freed:\n%s%s", code, o, e)
	}
	qo, _, _ := testkit.Run(t, "qemu-img", "check", ours)
	if strings.Contains(qo, "leaked") || !strings.Contains(qo, "1 errors were found") {
		t.Errorf("qemu-img check after qimg check -r leaks:\n%s", qo)
	}
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 7 0 64k", ours)
}
