package qcow2

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// A check with repair of an image with valid persistent bitmaps (kept
// and counted on a repair open) whose read of the bitmap directory or of
// a bitmap table failed counted none of the clusters it names: the
// bitmap tables and data clusters looked leaked, and -r leaks / -r all
// set their refcounts to 0 while the bitmaps still name them (qemu-img
// check: ERROR cluster refcount=0 reference=1, exit 2). As for an L2
// table (TestRegress_CheckRepairKeepsClustersOfAnUnreadableTable), an
// unreadable table of references now stops every repair.
func TestRegress_CheckRepairKeepsClustersOfAnUnreadableBitmapTable(t *testing.T) {
	testkit.NeedQemu(t)
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		for _, what := range []string{"directory", "table"} {
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
				if err == nil && (r.CheckErrors == 0 || r.Err == nil || !strings.Contains(strings.Join(r.Messages, "\n"), "ERROR reading the "+map[string]string{"directory": "bitmap directory", "table": "table of bitmap"}[what])) {
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
				testkit.QemuCheck(t, out)
			})
		}
	}
}
