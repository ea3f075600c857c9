package qcow2

import (
	"encoding/binary"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// oneClusterImage creates an image with options co, writes one data
// cluster at guest offset 0, and returns its bytes.
func oneClusterImage(t *testing.T, co CreateOptions) []byte {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, im, 0, pattern(int(co.ClusterSize), 1))
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), mem.Bytes()...)
}

// TestCheck_Leak64BitHugeRefcount: with 64-bit refcounts a leaked
// cluster whose stored count is 2^63 or more (garbage in a refcount
// block) is a leak that qemu-img check -r leaks fixes; the repair must
// not fail with a refcount overflow (the delta was computed in int64).
func TestCheck_Leak64BitHugeRefcount(t *testing.T) {
	for _, stored := range []uint64{1 << 63, 1<<63 + 5, ^uint64(0)} {
		b := oneClusterImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096, RefcountBits: 64})
		be := binary.BigEndian
		refblock := be.Uint64(b[be.Uint64(b[48:]):])
		// An unused cluster inside the file: append one and count it.
		n := uint64(len(b)) / 4096
		b = append(b, make([]byte, 4096)...)
		be.PutUint64(b[refblock+n*8:], stored)
		for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
			d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
			im, err := OpenDevice(d, Options{Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			r, err := im.Check(CheckOptions{Repair: mode})
			if err != nil {
				t.Fatalf("refcount %#x, mode %d: check failed: %v", stored, mode, err)
			}
			if r.Leaks != 0 || r.Corruptions != 0 || r.LeaksFixed != 1 {
				t.Errorf("refcount %#x, mode %d: %+v", stored, mode, r)
			}
			r, err = im.Check(CheckOptions{})
			if err != nil || !r.Clean() {
				t.Errorf("refcount %#x, mode %d: after repair: %v %+v", stored, mode, err, r)
			}
			im.Close()
		}
	}
}

// TestCheck_TablePastEOFAfterTruncate: an L2 table that lies
// wholly past the end of the file (exactly one cluster past it: the
// file lost its last cluster) is, as for qemu-img check, a reference
// "exceeding the end of the file by one cluster or more", a corruption;
// the open's slack for a last table past the end must not hide it.
func TestCheck_TablePastEOFAfterTruncate(t *testing.T) {
	b := oneClusterImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096, RefcountBits: 16})
	be := binary.BigEndian
	// A new L2 table, the last cluster of the file: zero a range of
	// the second L2 table's guest range.
	{
		d := memdev.FromBytes(b, memdev.Options{})
		im, err := OpenDevice(d, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.WriteZeroes(512*4096, 4096, 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		b = append([]byte(nil), d.Bytes()...)
	}
	l1 := be.Uint64(b[40:])
	l2 := be.Uint64(b[l1+8:]) & format.L1OffsetMask
	if l2 == 0 || l2+4096 != uint64(len(b)) {
		t.Fatalf("setup: second L2 table at %#x, file size %#x", l2, len(b))
	}
	b = b[:l2] // the file loses the table's cluster
	d := memdev.FromBytes(append([]byte(nil), b...), memdev.Options{})
	r := checkMem(t, d)
	if r.Corruptions == 0 {
		t.Errorf("an L2 table a whole cluster past the end of the file is not reported: %+v", r)
	}
}

// TestCheck_Copied64BitHugeRefcount: a data cluster with COPIED
// set whose 64-bit refcount is 2^63 or more is a leak and a COPIED
// corruption for qemu-img check (exit 2), not a leak only: the flag
// check must not take such a count for "not known".
func TestCheck_Copied64BitHugeRefcount(t *testing.T) {
	b := oneClusterImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096, RefcountBits: 64})
	be := binary.BigEndian
	refblock := be.Uint64(b[be.Uint64(b[48:]):])
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & format.L1OffsetMask
	data := be.Uint64(b[l2:]) & format.L2OffsetMask
	be.PutUint64(b[refblock+data/4096*8:], 1<<63+1)
	d := memdev.FromBytes(b, memdev.Options{})
	r := checkMem(t, d)
	if r.Leaks != 1 || r.Corruptions != 1 {
		t.Errorf("want 1 leak and 1 corruption (COPIED on a refcount of 2^63+1): %+v", r)
	}
}
