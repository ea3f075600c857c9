package qcow2

import (
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// A check with repair whose read of an L2 table (or of a snapshot's L1
// table) failed counted none of that table's references, took the data
// clusters it maps for leaks and freed them: the next allocation could
// overwrite data the image still maps. QEMU's check stops at the I/O
// error; ours now goes on reporting but repairs nothing once a table of
// references could not be read.
func TestRegress_CheckRepairKeepsClustersOfAnUnreadableTable(t *testing.T) {
	const cs = 512 // an L2 table maps 64 clusters: several tables
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		for _, what := range []string{"l2", "snapshot-l1"} {
			t.Run(what+"/"+map[RepairMode]string{RepairLeaks: "leaks", RepairAll: "all"}[mode], func(t *testing.T) {
				mem := memdev.New(memdev.Options{})
				if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
					t.Fatal(err)
				}
				im, err := OpenDevice(mem, Options{})
				if err != nil {
					t.Fatal(err)
				}
				span := int64(cs) * cs / 8
				want := make([]byte, 1<<20)
				for i := int64(0); i < 3; i++ {
					mustWrite(t, im, pattern(2*cs, byte(i+1)), i*span)
					copy(want[i*span:], pattern(2*cs, byte(i+1)))
				}
				var bad int64
				if what == "snapshot-l1" {
					sn, err := im.CreateSnapshot("s")
					if err != nil {
						t.Fatal(err)
					}
					bad = int64(sn.L1TableOffset)
					// The active tables move away from the snapshot's.
					for i := int64(0); i < 3; i++ {
						mustWrite(t, im, pattern(cs, byte(i+7)), i*span+cs)
						copy(want[i*span+cs:], pattern(cs, byte(i+7)))
					}
				} else {
					bad = int64(im.l1.Load().load(1).Offset())
				}
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				var fired atomic.Bool
				ed := errordev.New(mem, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
					if op == errordev.Read && off == bad && fired.Load() {
						return errordev.ErrInjectedEIO
					}
					return nil
				}), errordev.Options{})
				im, err = OpenDevice(ed, Options{})
				if err != nil {
					t.Fatal(err)
				}
				fired.Store(true) // from the check on
				r, err := im.Check(CheckOptions{Repair: mode})
				if err == nil && (r.CheckErrors == 0 || r.Err == nil) {
					t.Errorf("check with an unreadable table: %d check errors, Err %v", r.CheckErrors, r.Err)
				}
				if err == nil && r.LeaksFixed+r.CorruptionsFixed != 0 {
					t.Errorf("repaired %d leaks, %d corruptions without the table's references: %v", r.LeaksFixed, r.CorruptionsFixed, head(r.Messages, 6))
				}
				fired.Store(false)
				// The next allocations must not take the table's clusters.
				mustWrite(t, im, pattern(8*cs, 9), 10*span)
				copy(want[10*span:], pattern(8*cs, 9))
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				im2 := openCheckedAfterFailedSnapshot(t, mem)
				if got := testkit.ReadAll(t, im2); testkit.FirstDiff(got, want) >= 0 {
					t.Fatalf("data lost at %d", testkit.FirstDiff(got, want))
				}
			})
		}
	}
}
