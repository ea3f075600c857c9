package qcow2

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestTruncatePrealloc_FailedLinkKeepsTables: a falloc or full growth
// whose space was given (the reserve succeeded) but whose links then
// fail (a write after the reserve refused) cuts the file back only to
// the end of the last cluster still in use: an L2 table the failed
// preallocation keeps linked stays inside the file (cutGrowthLocked),
// and the image checks clean with both checkers after it is closed.
// The growth needs new L2 tables (512-byte clusters: one maps 32 KiB).
func TestTruncatePrealloc_FailedLinkKeepsTables(t *testing.T) {
	for _, mode := range []string{PreallocFalloc, PreallocFull} {
		for nth := int64(1); nth <= 6; nth++ {
			t.Run(fmt.Sprintf("%s/write%d", mode, nth), func(t *testing.T) {
				mem := memdev.New(memdev.Options{})
				if err := CreateDevice(mem, CreateOptions{Size: 64 << 10, ClusterSize: 512}); err != nil {
					t.Fatal(err)
				}
				var reserved atomic.Bool
				var writes atomic.Int64
				inj := errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
					if op == errordev.Zero && n >= 256<<10 || op == errordev.Write && n >= 256<<10 {
						reserved.Store(true) // the data's space (falloc: zeroes; full: written zeros)
						return nil
					}
					if reserved.Load() && op == errordev.Write && writes.Add(1) >= nth {
						return syscall.EIO
					}
					return nil
				})
				d := errordev.New(mem, inj, errordev.Options{})
				im, err := OpenDevice(d, Options{PreallocSize: -1})
				if err != nil {
					t.Fatal(err)
				}
				data := pattern(4096, 3)
				mustWrite(t, im, data, 0)
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				err = im.TruncatePrealloc(1<<20, mode)
				if !reserved.Load() {
					t.Fatalf("the growth never reserved its data's space (err %v)", err)
				}
				if err == nil {
					t.Skipf("write %d after the reserve: none failed the growth", nth)
				}
				im.Close() // may fail: the image may refuse writes now
				d.SetInjector(nil)
				sz, _ := mem.Size()
				ro, err := OpenDevice(mem, Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer ro.Close()
				l1 := ro.l1.Load()
				for i := range l1.size() {
					if e := l1.load(i); e.Offset() != 0 && int64(e.Offset())+512 > sz {
						t.Errorf("L1 entry %d names an L2 table at %#x, past the file's end %#x", i, e.Offset(), sz)
					}
				}
				got := make([]byte, len(data))
				if _, err := ro.ReadAt(got, 0); err != nil || string(got) != string(data) {
					t.Errorf("data after the failure: %v", err)
				}
				r, err := ro.Check(CheckOptions{})
				if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
					t.Errorf("check: %v, %d corruptions, %d errors: %v", err, r.Corruptions, r.CheckErrors, head(r.Messages, 5))
				}
				if testkit.HaveQemu() {
					qemuCheckCrash(t, int(nth), mem, Options{}, false) // leaks allowed
				}
			})
		}
	}
}
