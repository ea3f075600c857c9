package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestAmendBitmapConvert_OrderLikeQemu: the LUKS/amend/bitmap review's
// differences with qemu-img, each on a copy of the same image: an amend
// option given twice takes its last value (qimg refused a bad first
// one); bitmap -g 0 is no granularity (qimg refused it without --add); a
// merge from another image names a missing target before a missing
// source; convert --bitmaps meets inconsistent bitmaps newest first.
func TestAmendBitmapConvert_OrderLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := t.TempDir()
	plain := filepath.Join(d, "plain.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", plain, "1M")
	withBitmap := filepath.Join(d, "bm.qcow2")
	cp(t, plain, withBitmap)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", withBitmap, "b")
	inconsistent := filepath.Join(d, "inc.qcow2")
	cp(t, plain, inconsistent)
	for _, b := range []string{"a", "b", "c"} {
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", inconsistent, b)
	}
	testkit.Run(t, "qemu-io", "-f", "qcow2", "-c", "write 0 4k", "-c", "abort", inconsistent) // leaves them in use
	other := filepath.Join(d, "other.qcow2")
	cp(t, plain, other)
	prefix := regexp.MustCompile(`(?m)^qimg: [a-z]+: `)
	for _, tc := range []struct {
		from string
		args []string
	}{
		{plain, []string{"amend", "-o", "refcount_bits=3,refcount_bits=8", "IMG"}},
		{plain, []string{"amend", "-o", "refcount_bits=8,refcount_bits=3", "IMG"}},
		{plain, []string{"amend", "-o", "compat=1.0,compat=1.1", "IMG"}},
		{plain, []string{"amend", "-o", "compat=1.1,compat=1.0", "IMG"}},
		{plain, []string{"amend", "-o", "refcount_bits=3,compat=1.0", "IMG"}},
		{plain, []string{"amend", "-o", "refcount_bits=x,refcount_bits=8", "IMG"}},
		{withBitmap, []string{"bitmap", "--clear", "-g", "0", "IMG", "b"}},
		{withBitmap, []string{"bitmap", "--clear", "-g", "4k", "IMG", "b"}},
		{plain, []string{"bitmap", "--merge", "b0", "-b", other, "-F", "qcow2", "IMG", "x"}},
		{inconsistent, []string{"convert", "--bitmaps", "-O", "qcow2", "IMG", "OUT"}},
		{inconsistent, []string{"convert", "--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", "IMG", "OUT"}},
	} {
		run := func(tool, img, out string) (string, int) {
			cp(t, tc.from, img)
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.NewReplacer("IMG", img, "OUT", out).Replace(a)
			}
			var o, e string
			var code int
			if tool == "qemu-img" {
				o, e, code = testkit.Run(t, "qemu-img", args...)
			} else {
				o, e, code = runQ(t, args...)
			}
			e = strings.SplitN(prefix.ReplaceAllString(e, "qemu-img: "), "\n", 2)[0] // qimg joins qemu-img's hint lines
			if tool != "qemu-img" {
				e = strings.SplitN(e, "; ", 2)[0]
			}
			info, _, _ := testkit.Run(t, "qemu-img", "info", img)
			return o + e + "\n" + regexp.MustCompile(`(?m)^(image|disk size).*\n`).ReplaceAllString(info, ""), code
		}
		q, qcode := run("qemu-img", filepath.Join(d, "q.qcow2"), filepath.Join(d, "qo.qcow2"))
		g, code := run("qimg", filepath.Join(d, "g.qcow2"), filepath.Join(d, "go.qcow2"))
		if code != qcode || strings.ReplaceAll(g, "g.qcow2", "q.qcow2") != q {
			t.Errorf("%q: exit %d, qemu-img %d\nqimg:\n%s\nqemu-img:\n%s", tc.args, code, qcode, g, q)
		}
	}
}
