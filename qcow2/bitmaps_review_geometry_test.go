package qcow2

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Odd geometries give the same dirty bitmaps through the engine as
// through qemu-io: a disk size that is not a multiple of the granules,
// 512-byte and 2 GiB granules, a table over several clusters (512-byte
// and 4 KiB clusters), extended L2 entries, and writes that cross the
// 64-granule words of the in-memory bitset and end at the disk's end.
func TestBitmapsReview_GeometryLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	type op struct {
		kind   string // w, z, d
		off, n int64
	}
	for _, tc := range []struct {
		name string
		opts string
		size int64
		gran int64
		ops  []op
	}{
		{"c512 g512 two-cluster table", "cluster_size=512", 160<<20 + 1536, 512, []op{
			{"w", 63*512 + 100, 700}, {"w", 4096*512 - 1, 2}, {"z", 100 << 20, 64 * 512}, {"d", 150 << 20, 1 << 20},
			{"w", 160<<20 + 1024, 512}, {"w", 80<<20 + 5, 1}}},
		{"c4k g512 many data clusters", "cluster_size=4096", 1<<30 + 512, 512, []op{
			{"w", 0, 1}, {"w", 64*512 - 512, 1024}, {"w", 1<<30 - 100, 612}, {"z", 512 << 20, 8192}, {"d", 700 << 20, 1 << 20}}},
		{"g2G", "", 5<<30 + 512, 1 << 31, []op{{"w", 2<<30 - 1, 2}, {"w", 5 << 30, 512}}},
		{"extended l2 g512 unaligned", "extended_l2=on,cluster_size=64k", 4 << 20, 512, []op{
			{"w", 0, 256 << 10}, {"d", 1000, 3000}, {"z", 5000, 100}, {"d", 70000, 70000}, {"z", 140000, 5000}, {"d", 200000, 300}}},
		{"c512 g512 unaligned zero and discard", "cluster_size=512", 4 << 20, 512, []op{
			{"w", 0, 256 << 10}, {"d", 1000, 3000}, {"z", 5000, 100}, {"d", 70000, 70000}, {"z", 140000, 5000}}},
		{"extended l2", "extended_l2=on,cluster_size=64k", 32<<20 + 4096, 4096, []op{
			{"w", 2048, 100}, {"z", 1 << 20, 6144}, {"d", 2 << 20, 64 << 10}, {"w", 32 << 20, 4096}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.qcow2")
			args := []string{"create", "-q", "-f", "qcow2"}
			if tc.opts != "" {
				args = append(args, "-o", tc.opts)
			}
			testkit.MustRun(t, "qemu-img", append(args, base, fmt.Sprint(tc.size))...)
			testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", fmt.Sprint(tc.gran), base, "b")
			theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
			testkit.MustRun(t, "cp", base, theirs)
			testkit.MustRun(t, "cp", base, ours)
			qargs := []string{"-d", "unmap"}
			for _, o := range tc.ops {
				switch o.kind {
				case "w":
					qargs = append(qargs, "-c", fmt.Sprintf("write -P 5 %d %d", o.off, o.n))
				case "z":
					qargs = append(qargs, "-c", fmt.Sprintf("write -z %d %d", o.off, o.n))
				case "d":
					qargs = append(qargs, "-c", fmt.Sprintf("discard %d %d", o.off, o.n))
				}
			}
			testkit.MustRun(t, "qemu-io", append(qargs, "-f", "qcow2", theirs)...)
			im, err := Open(ours, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range tc.ops {
				var err error
				switch o.kind {
				case "w":
					_, err = im.WriteAt([]byte(strings.Repeat("\x05", int(o.n))), o.off)
				case "z":
					err = im.WriteZeroes(o.off, o.n, 0)
				case "d":
					err = im.Discard(o.off, o.n)
				}
				if err != nil {
					t.Fatalf("%+v: %v", o, err)
				}
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			sameBitmapsAsQemu(t, theirs, ours, "b")
		})
	}
}

// A table entry that reads as all ones (no data cluster) loads as all
// ones and is stored as QEMU stores it.
func TestBitmapsReview_AllOnesEntryLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "64M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", base, "b")
	raw, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	// 64 MiB in 512-byte granules: 4 data clusters of bits. The second
	// reads as all ones.
	patchBitmapEntry(t, raw, "b", func(e *format.BitmapEntry) {
		binary.BigEndian.PutUint64(raw[uint64(e.TableOffset)+8:], format.BitmapAllOnes)
	})
	theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
	for _, p := range []string{theirs, ours} {
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := dirtyMap(t, theirs, "b"); !strings.Contains(got, "16777216    1  dirty") {
		t.Fatalf("the crafted entry is not all ones for QEMU:\n%s", got)
	}
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 40M 4k", "-f", "qcow2", theirs)
	im, err := Open(ours, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(make([]byte, 4096), 40<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheckNoCorruption(t, ours)
	if a, b := dirtyMap(t, theirs, "b"), dirtyMap(t, ours, "b"); a != b {
		t.Errorf("bitmap b:\nqemu-io:\n%s\nours:\n%s", a, b)
	}
}
