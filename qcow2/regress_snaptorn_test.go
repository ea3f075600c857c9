package qcow2

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// tornL1Dev fails CreateSnapshot's write of the active L1 once, after
// letting the part keep says reach the device (nil: all of it).
type tornL1Dev struct {
	block.Device
	l1    int64
	keep  func(b []byte) (int64, []byte)
	fired atomic.Bool
	times atomic.Int32 // more failures of the same write (the fix's)
}

func (d *tornL1Dev) Writev(off int64, bufs [][]byte) error {
	if off == d.l1 && strings.Contains(string(debug.Stack()), ").CreateSnapshot(") && d.fired.Load() && d.times.Add(-1) >= 0 {
		return errordev.ErrInjectedEIO
	}
	if off == d.l1 && strings.Contains(string(debug.Stack()), ").CreateSnapshot(") && d.fired.CompareAndSwap(false, true) {
		b := bytes.Join(bufs, nil)
		if at, k := d.keep(b); len(k) > 0 {
			if err := d.Device.Writev(off+at, [][]byte{k}); err != nil {
				return err
			}
		}
		return errordev.ErrInjectedEIO
	}
	return d.Device.Writev(off, bufs)
}

// A CreateSnapshot whose active-L1 write fails after part or all of it
// landed (COPIED cleared on the media in some entries), on an image with
// compressed clusters sharing host clusters: the undo (ed23dbf) walks
// the same tree and the image is as it was (qemu-img check: no
// corruption, no leak), keeps its writes, and its data. With again, the
// undo's own L1 write (setting COPIED back) fails too: the flags stay
// owed and the Close sets them.
func TestRegress_CreateSnapshotTornActiveL1(t *testing.T) {
	const cs = 512 // an L2 table maps 32 KiB: an L1 of 2 sectors
	for _, again := range []int32{0, 1} {
		for name, keep := range map[string]func([]byte) (int64, []byte){
			"none":   func([]byte) (int64, []byte) { return 0, nil },
			"first":  func(b []byte) (int64, []byte) { return 0, b[:512] },
			"second": func(b []byte) (int64, []byte) { return 512, b[512:] },
			"all":    func(b []byte) (int64, []byte) { return 0, b },
		} {
			t.Run(fmt.Sprintf("%s/again%d", name, again), func(t *testing.T) {
				mem := memdev.New(memdev.Options{})
				if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 4 << 20}); err != nil {
					t.Fatal(err)
				}
				td := &tornL1Dev{Device: mem, keep: keep}
				td.times.Store(again)
				im, err := OpenDevice(td, Options{})
				if err != nil {
					t.Fatal(err)
				}
				td.l1 = int64(im.hdr.L1TableOffset)
				want := make([]byte, 4<<20)
				span := int64(cs) * cs / 8
				for i := int64(0); i < 100; i += 7 {
					p := pattern(cs, byte(i+1))
					mustWrite(t, im, p, i*span)
					copy(want[i*span:], p)
					z := bytes.Repeat([]byte{byte(i)}, cs)
					if err := im.WriteCompressed(i*span+4*cs, z); err != nil {
						t.Fatal(err)
					}
					copy(want[i*span+4*cs:], z)
				}
				if err := im.Flush(); err != nil {
					t.Fatal(err)
				}
				if _, err := im.CreateSnapshot("s"); err == nil || !td.fired.Load() {
					t.Fatalf("CreateSnapshot: %v (fired %v)", err, td.fired.Load())
				}
				p := pattern(3*cs, 77)
				mustWrite(t, im, p, 7*span+cs)
				copy(want[7*span+cs:], p)
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				f := filepath.Join(testkit.Dir(t), "after.qcow2")
				if err := mem.WriteFile(f); err != nil {
					t.Fatal(err)
				}
				testkit.QemuCheck(t, f)
				im2, err := OpenDevice(mem.Clone(), Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer im2.Close()
				if got := testkit.ReadAll(t, im2); testkit.FirstDiff(got, want) >= 0 {
					t.Fatalf("data differs at %d", testkit.FirstDiff(got, want))
				}
			})
		}
	}
}

// A DeleteSnapshot whose write of the active L1 setting COPIED back by
// the counts failed once left the flags set in memory only: the owed
// fix that the next Flush ran compared the flags with memory, found
// nothing to change and never wrote the L1 (qemu-img check: ERROR
// OFLAG_COPIED L2 cluster ... refcount=1, exit 2, for good). The L1 is
// now written again until a write of it succeeds.
func TestRegress_FailedCopiedL1WriteAfterDeleteSnapshot(t *testing.T) {
	deleteSnapshotFailingOnce(t, errordev.Write, true, "copiedByCountsLocked")
}
