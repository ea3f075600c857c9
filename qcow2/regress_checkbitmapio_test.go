package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// A check with repair of an image with valid persistent bitmaps (kept
// and counted on a repair open) whose read of the bitmap directory or of
// a bitmap table failed, or whose directory could not be parsed,
// counted none of the clusters it names: the
// bitmap tables and data clusters looked leaked, and -r leaks / -r all
// set their refcounts to 0 while the bitmaps still name them (qemu-img
// check: ERROR cluster refcount=0 reference=1, exit 2). As for an L2
// table (TestRegress_CheckRepairKeepsClustersOfAnUnreadableTable), an
// unreadable table of references now stops every repair.
func TestRegress_CheckRepairKeepsClustersOfAnUnreadableBitmapTable(t *testing.T) {
	testkit.NeedQemu(t)
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		for _, what := range []string{"directory", "table", "unparsable"} {
			t.Run(what+"/"+map[RepairMode]string{RepairLeaks: "leaks", RepairAll: "all"}[mode], func(t *testing.T) {
				p := filepath.Join(testkit.Dir(t), "bm.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", p, "1M")
				testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
				testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", p)
				testkit.QemuCheck(t, p)
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if what == "unparsable" {
					// A directory entry with an empty name: the
					// directory cannot be parsed, and names what it
					// names all the same.
					dir := bitmapDirOffset(t, b)
					binary.BigEndian.PutUint16(b[dir+18:], 0)
				}
				before := refcountsOf(t, memdev.FromBytes(b, memdev.Options{}))
				mem := memdev.FromBytes(b, memdev.Options{})
				var fired atomic.Bool
				ed := errordev.New(mem, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
					if op != errordev.Read || !fired.Load() {
						return nil
					}
					if !strings.Contains(string(debug.Stack()), ").countBitmaps(") {
						return nil
					}
					// The directory (one 32-byte entry) is read first,
					// then the table (one 8-byte entry: 256 bits).
					if what == "directory" && n == 32 || what == "table" && n == 8 {
						return errordev.ErrInjectedEIO
					}
					return nil
				}), errordev.Options{})
				im, err := OpenDevice(ed, Options{Repair: true})
				if err != nil {
					t.Fatal(err)
				}
				if !im.bitmapsKept {
					t.Fatal("bitmaps not kept on a repair open")
				}
				fired.Store(true)
				r, err := im.Check(CheckOptions{Repair: mode})
				fired.Store(false)
				if what != "unparsable" && err == nil && (r.CheckErrors == 0 || r.Err == nil || !strings.Contains(strings.Join(r.Messages, "\n"), "ERROR reading the "+map[string]string{"directory": "bitmap directory", "table": "table of bitmap"}[what])) {
					t.Errorf("check with an unreadable bitmap %s: %d check errors, Err %v: %v", what, r.CheckErrors, r.Err, head(r.Messages, 6))
				}
				if err == nil && r.LeaksFixed+r.CorruptionsFixed != 0 {
					t.Errorf("repaired %d leaks, %d corruptions without the bitmap %s's references: %v", r.LeaksFixed, r.CorruptionsFixed, what, head(r.Messages, 6))
				}
				if err := im.Close(); err != nil {
					t.Logf("close: %v", err)
				}
				out := filepath.Join(testkit.Dir(t), "after.qcow2")
				if err := mem.WriteFile(out); err != nil {
					t.Fatal(err)
				}
				if what == "unparsable" {
					// qemu-img check fails on the directory itself:
					// compare the refcounts with those before.
					if after := refcountsOf(t, mem.Clone()); !slices.Equal(after, before) {
						t.Errorf("refcounts changed by a repair refused: %v, were %v", after, before)
					}
					return
				}
				testkit.QemuCheck(t, out)
			})
		}
	}
}

// bitmapDirOffset is the offset of the bitmap directory of the image b.
func bitmapDirOffset(t *testing.T, b []byte) int64 {
	t.Helper()
	im, err := OpenDevice(memdev.FromBytes(b, memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, e := range im.hdr.Extensions {
		if e.Type == format.ExtBitmaps {
			ext, err := format.ParseBitmapsExt(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			return int64(ext.DirOffset)
		}
	}
	t.Fatal("no bitmaps extension")
	return 0
}

// refcountsOf is the refcount of every cluster of the image on dev.
func refcountsOf(t *testing.T, dev *memdev.Dev) []uint64 {
	t.Helper()
	im, err := OpenDevice(dev, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	n, err := dev.Size()
	if err != nil {
		t.Fatal(err)
	}
	var rcs []uint64
	for c := uint64(0); c < uint64(n)/im.g.ClusterSize; c++ {
		rc, err := im.refcount(c)
		if err != nil {
			t.Fatal(err)
		}
		rcs = append(rcs, rc)
	}
	return rcs
}
