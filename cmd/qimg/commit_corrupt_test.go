package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_CorruptTopLeavesBase: a top that is marked corrupt, or
// whose metadata check finds a corruption, is refused before anything is
// copied: the base, which other overlays may share, is unchanged. qimg
// copied into the base and then failed to empty the top ("image is
// read-only", or the damage met by MakeEmpty); qemu-img refuses the
// first ("Image is corrupt; cannot be opened read/write", its words) and
// commits the second, marking the top corrupt or losing its bitmaps.
// (Found by a helper's sweep of hostile images.)
func TestCommit_CorruptTopLeavesBase(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct {
		name, want string
		damage     func(b []byte)
	}{
		{"corrupt bit", "Image is corrupt; cannot be opened read/write", func(b []byte) {
			b[79] |= 2 // incompatible_features: corrupt
		}},
		{"L2 entry at the L1 table", "errors were found on the image", func(b []byte) {
			l1 := binary.BigEndian.Uint64(b[40:])
			l2 := binary.BigEndian.Uint64(b[l1:]) & 0x00fffffffffffe00
			binary.BigEndian.PutUint64(b[l2:], l1|1<<63) // guest cluster 0's data is the L1 table
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := testkit.Dir(t)
			base, top := filepath.Join(d, "b.qcow2"), filepath.Join(d, "t.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 4M", base)
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
			testkit.MustRun(t, "qemu-io", "-c", "write -P 9 0 64k", "-c", "write -P 8 1M 64k", top)
			b, err := os.ReadFile(top)
			if err != nil {
				t.Fatal(err)
			}
			c.damage(b)
			if err := os.WriteFile(top, b, 0o644); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(base)
			if err != nil {
				t.Fatal(err)
			}
			_, e, code := runQ(t, "commit", top)
			if code == 0 || !strings.Contains(e, c.want) {
				t.Errorf("commit of a damaged top: exit %d, %s", code, e)
			}
			after, err := os.ReadFile(base)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Error("the base changed")
			}
		})
	}
}

// TestAmend_RefcountBitsOnCorruptRefused: a refcount width change on an
// image whose check finds a corruption is refused before anything
// changes. Guest data pointing at the refcount block: the change freed
// the old block under it, and the check after found a cluster in use
// with refcount 0 (qemu-img amends it; found by a helper's sweep).
func TestAmend_RefcountBitsOnCorruptRefused(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	img := filepath.Join(d, "t.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 9 0 64k", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	l1 := binary.BigEndian.Uint64(b[40:])
	rt := binary.BigEndian.Uint64(b[48:])
	rb := binary.BigEndian.Uint64(b[rt:])
	l2 := binary.BigEndian.Uint64(b[l1:]) & 0x00fffffffffffe00
	binary.BigEndian.PutUint64(b[l2:], rb|1<<63) // guest cluster 0's data is the refcount block
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, e, code := runQ(t, "amend", "-o", "refcount_bits=8", img)
	if code == 0 || !strings.Contains(e, "refcount_bits not changed") {
		t.Errorf("amend refcount_bits of a corrupt image: exit %d, %s", code, e)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, after) {
		t.Error("the image changed")
	}
}
