package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A discard, or a zero write that may unmap, that drops a cluster of an
// image with an external data file makes a hole in the data file, as
// qemu-io's does (qcow2 DF7): each command runs once through qemu-io,
// once through qimg io, on images qemu-img made alike; the data files
// must then hold the same bytes in the same space, and the maps match.
func TestDataFile_DiscardReachesDataFileLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	cmds := []string{
		"write -P 1 0 1M",
		"discard 0 512k",        // whole clusters: holes
		"write -z -u 512k 256k", // the same, through a zero write
		"write -z 768k 128k",    // no unmap: the clusters stay allocated
		"write -z -u 900k 20k",  // part of a cluster: nothing dropped
		"discard 960k 64k",
		"write -P 2 0 64k", // a dropped cluster written again
	}
	for _, tc := range []struct {
		name, opts string
		sameSpace  bool
	}{
		{"plain", "", true},
		{"raw", "data_file_raw=on", true},
		{"xl2", "extended_l2=on", true},
		{"xl2raw", "extended_l2=on,data_file_raw=on", true},
		// QEMU discards a 512-byte cluster at a time, which frees no
		// block of the data file's file system; qimg makes one hole of
		// adjacent clusters, which does: only the bytes compare.
		{"c512", "cluster_size=512", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			theirs := dataFileQemuImage(t, dir, tc.name+"-q", tc.opts)
			ours := dataFileQemuImage(t, dir, tc.name+"-o", tc.opts)
			for _, c := range cmds {
				qemuIO(t, theirs, "qcow2", c)
				qimgIO(t, ours, c)
			}
			od, qd := ours[:len(ours)-len(".qcow2")]+".data", theirs[:len(theirs)-len(".qcow2")]+".data"
			a, err := os.ReadFile(od)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(qd)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("the data files differ")
			}
			ob, qb := fileBlocks(t, od), fileBlocks(t, qd)
			if tc.sameSpace && ob != qb {
				t.Errorf("data file space: qimg's holds %d blocks of 512 bytes, qemu-io's %d", ob, qb)
			}
			if !tc.sameSpace && ob > qb {
				t.Errorf("data file space: qimg's holds %d blocks of 512 bytes, more than qemu-io's %d", ob, qb)
			}
			om := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
			qm := testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs)
			if om != qm {
				t.Errorf("qemu-img map:\nqimg's image:\n%s\nqemu-io's:\n%s", om, qm)
			}
			testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		})
	}
}

// fileBlocks is the space the file at p takes (st_blocks).
func fileBlocks(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return blocks(fi)
}
