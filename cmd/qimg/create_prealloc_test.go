package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCreate_PreallocLayoutLikeQemu: create -o preallocation=metadata,
// falloc or full writes the file qemu-img 7.2 writes, byte for byte and
// of the same length, so that map, check and info agree too: the L1
// table, then (metadata) each L2 table before its data clusters and each
// further refcount block right after the clusters that first needed it,
// and the zeros QEMU writes after the last guest byte to the end of its
// (sub)cluster; (falloc, full) new refcount blocks and a new refcount
// table after everything, the data clusters after them, the first L2
// table in the old refcount table's cluster and the others after the
// data; refcount table growth (512-byte clusters) as QEMU grows it.
// qimg's engine placed refcount blocks at the start of the range they
// cover, kept the refcount table and put the L2 tables first, ended a
// metadata file at the last guest byte: map offsets and the fragmentation
// check reports differed for 4 KiB clusters and for sizes that are not a
// whole number of clusters.
func TestCreate_PreallocLayoutLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	cases := []struct{ mode, opts, size string }{
		{"metadata", "", "1000448"},                             // a partial last cluster
		{"metadata", "cluster_size=4k", "12M"},                  // refcount block 1
		{"metadata", "cluster_size=512,refcount_bits=64", "3M"}, // the refcount table grows
		{"metadata", "cluster_size=2M", "5M"},
		{"metadata", "extended_l2=on", "1000448"}, // a partial last subcluster
		{"falloc", "", "5M"},
		{"falloc", "cluster_size=512", "1M"},
		{"falloc", "cluster_size=4k,refcount_bits=1", "3M"},
		{"falloc", "", "0"},
		{"full", "compat=0.10", "1000448"},
	}
	for _, c := range cases {
		opts := "preallocation=" + c.mode
		if c.opts != "" {
			opts += "," + c.opts
		}
		ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
		mustQ(t, "create", "-q", "-f", "qcow2", "-o", opts, ours, c.size)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, theirs, c.size)
		comparePreallocated(t, opts+" "+c.size, ours, theirs)
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// TestCreate_PreallocBackingLikeQemu: with a backing file (extended L2
// entries, every subcluster left to the backing file) the layout is
// qemu-img's too, and the image reads the backing file's data.
func TestCreate_PreallocBackingLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "3M", "write -P 7 0 3M")
	for _, mode := range []string{"metadata", "falloc"} {
		opts := "preallocation=" + mode + ",extended_l2=on"
		ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
		args := []string{"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", opts}
		mustQ(t, append(args, ours, "3M")...)
		testkit.MustRun(t, "qemu-img", append(args, theirs, "3M")...)
		comparePreallocated(t, opts, ours, theirs)
		qio(t, ours, "read -P 7 0 3M")
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// comparePreallocated fails t unless ours and theirs hold the same
// bytes and qemu-img map and check say the same of them.
func comparePreallocated(t *testing.T, what, ours, theirs string) {
	t.Helper()
	a, b := mustReadFile(t, ours), mustReadFile(t, theirs)
	if !bytes.Equal(a, b) {
		at := len(a)
		for i := range min(len(a), len(b)) {
			if a[i] != b[i] {
				at = i
				break
			}
		}
		t.Errorf("%s: qimg's file (%d B) and qemu-img's (%d B) differ from byte %#x", what, len(a), len(b), at)
	}
	cmds := [][]string{{"map", "--output=json"}} // which parts the file system holds
	if t.Failed() {
		cmds = append(cmds, []string{"check"})
	}
	for _, cmd := range cmds {
		o := testkit.MustRun(t, "qemu-img", append(cmd, ours)...)
		q := testkit.MustRun(t, "qemu-img", append(cmd, theirs)...)
		if o != q {
			t.Errorf("%s: qemu-img %s of qimg's image:\n%s\nof qemu-img's:\n%s", what, strings.Join(cmd, " "), o, q)
		}
	}
	mustQ(t, "check", ours)
}
