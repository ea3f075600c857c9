package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMeasure_OptionsLikeQemu: measure reads -o as qemu-img measure does:
// the format's options with their types (lazy_refcounts=1 was taken),
// compat only as 0.10 or 1.1 (compat=v3 was taken), cluster_size=0
// refused (it measured 64 KiB clusters), compression_type not read (lz4
// was refused), raw's preallocation not read.
func TestMeasure_OptionsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct{ fmt, o string }{
		{"qcow2", "compat=v3"}, {"qcow2", "compat=v2"}, {"qcow2", "compat=foo"}, {"qcow2", "compat=0.10"},
		{"qcow2", "lazy_refcounts=1"}, {"qcow2", "lazy_refcounts=on,compat=0.10"},
		{"qcow2", "cluster_size=0"}, {"qcow2", "cluster_size=x"}, {"qcow2", "cluster_size=1k,cluster_size=2k"},
		{"qcow2", "compression_type=lz4"}, {"qcow2", "preallocation=foo"}, {"qcow2", "preallocation=falloc,compat=0.10,cluster_size=4k"},
		{"qcow2", "refcount_bits=3"}, {"qcow2", "refcount_bits=0x10"}, {"qcow2", "foo=1"}, {"qcow2", "extended_l2=maybe"},
		{"raw", "foo=1"}, {"raw", "preallocation=metadata"}, {"raw", "preallocation=foo"}, {"raw", "cluster_size=4k"},
	} {
		args := []string{"measure", "-O", c.fmt, "--size", "1G", "-o", c.o}
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		if ours != theirs || code != qcode || (code != 0 && ourMessage(oerr) != qemuMessage(terr)) {
			t.Errorf("measure -O %s -o %s: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", c.fmt, c.o, code, qcode, ours, oerr, theirs, terr)
		}
	}
}

// TestCreate_OptionsLikeQemu: create's -o values as qemu-img create takes
// them: cluster_size=0 echoed and refused (a 64 KiB image was created),
// compat echoed as given (v3, not 1.1), and of a key given twice the last
// value counts, for a refused enum value too (compat=foo,compat=1.1 was
// refused); of several refused enums, the one qemu-img names.
func TestCreate_OptionsLikeQemu(t *testing.T) {
	d := qemuDir(t)
	for _, o := range []string{"cluster_size=0", "compat=v3", "compat=v2", "compat=v3,compat=0.10",
		"compat=foo,compat=1.1", "compat=1.1,compat=foo", "preallocation=foo,preallocation=off",
		"preallocation=foo,compat=bar", "compression_type=foo,preallocation=bar", "preallocation=foo,encrypt.format=foo",
		"compression_type=x,compression_type=zstd"} {
		ours, theirs := filepath.Join(d, "a.qcow2"), filepath.Join(d, "b.qcow2")
		os.Remove(ours)
		os.Remove(theirs)
		out, oerr, code := runQ(t, "create", "-f", "qcow2", "-o", o, ours, "1M")
		tout, terr, qcode := testkit.Run(t, "qemu-img", "create", "-f", "qcow2", "-o", o, theirs, "1M")
		tout, terr = strings.ReplaceAll(tout, theirs, ours), strings.ReplaceAll(terr, theirs, ours)
		_, oe := os.Stat(ours)
		_, te := os.Stat(theirs)
		if out != tout || code != qcode || ourMessage(oerr) != qemuMessage(terr) || (oe == nil) != (te == nil) {
			t.Errorf("create -o %s: exit %d, qemu-img %d, created %v, qemu-img %v\nours:\n%s%s\nqemu-img:\n%s%s",
				o, code, qcode, oe == nil, te == nil, out, oerr, tout, terr)
		}
		if code == 0 && qcode == 0 {
			oi := testkit.MustRun(t, "qemu-img", "info", ours)
			ti := strings.ReplaceAll(testkit.MustRun(t, "qemu-img", "info", theirs), theirs, ours)
			// The disk size is the file system's count of blocks, which
			// another test's files beside it can make one block more
			// (196 KiB against 200 KiB, seen twice under load): the
			// options are what this compares.
			if strip := func(s string) string { return dropLine(s[strings.Index(s, "file format"):], "disk size:") }; strip(oi) != strip(ti) {
				t.Errorf("create -o %s: qemu-img info\nours:\n%s\nqemu-img's:\n%s", o, oi, ti)
			}
			testkit.QemuCheck(t, ours)
		}
	}
}
