package qcow2

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// A growth preallocated in metadata mode (and in falloc or full mode
// without a reserve ahead) set its entries before the file reached
// their clusters, growing the file only at the end; the L2 table
// written back when the next one was allocated named clusters past the
// end of the file, and a crash (a kill, even: the clones below that
// keep every write) left a corruption for both checks (64 KiB clusters:
// any growth past 512 MiB). The file now reaches each cluster first.
func TestRegress_PreallocGrowthCrashInsideFile(t *testing.T) {
	configs := []struct {
		name string
		o    Options
		mo   memdev.Options
	}{
		{"fill-zeroes", Options{PreallocFill: FillZeroes, PreallocSize: 256 << 10, PreallocAlign: 4096}, memdev.Options{Media: block.MediaRAM}},
		{"reserve", Options{PreallocSize: 256 << 10, PreallocAlign: 4096}, memdev.Options{}},
		{"no-reserve", Options{PreallocSize: -1}, memdev.Options{}},
		{"prealloc-off", Options{Prealloc: "off"}, memdev.Options{}},
	}
	for _, mode := range []string{PreallocMetadata, PreallocFalloc, PreallocFull} {
		for _, c := range configs {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				const cs, size, grow = 512, 512 << 10, 974848
				mem := memdev.New(c.mo)
				if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, RefcountBits: 64, Size: size}); err != nil {
					t.Fatal(err)
				}
				dev := &hookDev{Dev: mem, before: func() {}}
				im, err := OpenDevice(dev, c.o)
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(1, 2))
				var clones []*memdev.Dev
				dev.mu.Lock()
				dev.before = func() {
					clones = append(clones, mem.CrashClone(rng, 0.5), mem.CrashClone(rng, 1))
				}
				dev.mu.Unlock()
				if err := im.TruncatePrealloc(grow, mode); err != nil {
					t.Fatal(err)
				}
				dev.mu.Lock()
				dev.before = func() {}
				dev.mu.Unlock()
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				// The file ends where the last cluster does, as before.
				r := checkDev(t, mem)
				if fsz, _ := mem.Size(); fsz != r.ImageEndOffset {
					t.Errorf("file of %d bytes, image ends at %d", fsz, r.ImageEndOffset)
				}
				testkit.QemuCheck(t, writeDev(t, mem))
				// Four clones, spread over the growth (an odd step:
				// torn ones and whole ones), go through qemu-img check
				// too, as the crash left them (leaks allowed) and after
				// the engine's leak repair (clean).
				qemu, step := 0, len(clones)/4|1
				for i, cl := range clones {
					checkDev(t, cl, fmt.Sprintf("clone %d", i))
					if (i+1)%step == 0 && testkit.HaveQemu() {
						qemu++
						if !qemuCheckCrash(t, i, cl, Options{}, false) || !qemuCheckRepaired(t, i, cl, Options{}) {
							t.FailNow()
						}
					}
				}
				t.Logf("%d clones, %d of them through qemu-img check", len(clones), qemu)
			})
		}
	}
}

// checkDev opens dev read-only and fails t on any corruption or check
// error (leaks are allowed).
func checkDev(t *testing.T, dev *memdev.Dev, what ...string) *CheckResult {
	t.Helper()
	im, err := OpenDevice(dev, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%v: open: %v", what, err)
	}
	defer im.Close()
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		sz, _ := dev.Size()
		t.Fatalf("%v (file of %d bytes): %v %d corruptions: %v", what, sz, err, r.Corruptions, r.Messages[:min(len(r.Messages), 2)])
	}
	return r
}

// writeDev writes dev's contents to a new file and returns its path.
func writeDev(t *testing.T, dev *memdev.Dev) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	if err := dev.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// qemuCheckRepaired opens crash point k's image dev with o, repairs its
// leaks (a crash leaves no other damage), closes it and has qemu-img
// check find it clean (qemuCheckCrash). It changes dev.
func qemuCheckRepaired(t *testing.T, k int, dev *memdev.Dev, o Options) bool {
	t.Helper()
	return qemuCheckRepairedMode(t, k, dev, o, RepairLeaks)
}

// qemuCheckRepairedMode is qemuCheckRepaired repairing with mode
// (RepairAll: also the COPIED flags a test cleared itself).
func qemuCheckRepairedMode(t *testing.T, k int, dev *memdev.Dev, o Options, mode RepairMode) bool {
	t.Helper()
	o.ReadOnly = false
	im, err := OpenDevice(dev, o)
	if err != nil {
		t.Errorf("crash point %d: open for the repair: %v", k, err)
		return false
	}
	r, err := im.Check(CheckOptions{Repair: mode})
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	if err != nil || !r.Clean() {
		t.Errorf("crash point %d: leak repair: %v, %d corruptions, %d leaks, %d errors: %v", k, err, r.Corruptions, r.Leaks, r.CheckErrors, head(r.Messages, 5))
		return false
	}
	return qemuCheckCrash(t, k, dev, o, true)
}
