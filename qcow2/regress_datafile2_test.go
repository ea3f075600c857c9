package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// A shrink commits its header before it cuts the data file; a crash
// between left the old bytes past the new end, and a later growth linked
// the grown range in place (data_file_raw, or a preallocation) over
// them: it read the bytes from before the shrink, not zeros (Q18). The
// growth now cuts the data file back first.
func TestRegress_DataFileShrinkCrashThenGrow(t *testing.T) {
	for _, v := range []struct {
		nopass, raw bool
		pre         string
	}{{true, true, ""}, {false, true, ""}, {true, false, PreallocMetadata}} {
		t.Run(fmt.Sprintf("nopass=%v,raw=%v,prealloc=%q", v.nopass, v.raw, v.pre), func(t *testing.T) {
			const size, half = 256 << 10, 128 << 10
			imgMem, dataMem := dfMemImage(t, CreateOptions{Size: size, ClusterSize: 4096}, v.raw)
			h := &pairHook{before: func() {}}
			im, err := OpenDevice(&pairDev{imgMem, h}, Options{NoPassDiscard: v.nopass, DataDevice: &pairDev{dataMem, h}})
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, im, bytes.Repeat([]byte{0xee}, size), 0)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			var clones [][2]*memdev.Dev
			rng := rand.New(rand.NewPCG(1, 2))
			h.before = func() {
				clones = append(clones, [2]*memdev.Dev{imgMem.CrashClone(rng, 1), dataMem.CrashClone(rng, 1)})
			}
			if err := im.Shrink(half); err != nil {
				t.Fatal(err)
			}
			h.before = func() {}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			qemu := 0
			for k, c := range clones {
				// Each clone pair (a few: one per device op of the
				// shrink) goes through qemu-img check too, as the
				// crash left it (leaks allowed) and after the growth
				// and a leak repair (clean).
				sample := testkit.HaveQemu()
				if sample {
					qemu++
				}
				what := fmt.Sprintf("clone %d", k)
				if sample && !dfQemuCheckCrash(t, what, c[0], c[1], false) {
					continue
				}
				re, err := OpenDevice(c[0], Options{DataDevice: c[1], NoPassDiscard: v.nopass})
				if err != nil {
					t.Fatalf("clone %d: %v", k, err)
				}
				sz, _ := re.Size()
				if sz == size && !sample {
					re.Close()
					continue
				}
				if sz == size {
					dfRepairQemuCheck(t, what, re, c[0], c[1])
					continue
				}
				if v.pre != "" {
					err = re.TruncatePrealloc(size, v.pre)
				} else {
					err = re.Truncate(size)
				}
				if err != nil {
					t.Fatalf("clone %d: grow: %v", k, err)
				}
				got := testkit.ReadAll(t, re)
				if sample {
					dfRepairQemuCheck(t, what, re, c[0], c[1])
				} else {
					re.Close()
				}
				if i := testkit.FirstDiff(got[sz:], make([]byte, size-sz)); i >= 0 {
					t.Errorf("clone %d (size %d after the crash): the grown range reads %#x at %d, not zeros", k, sz, got[sz+int64(i)], sz+int64(i))
				}
			}
			t.Logf("%d clones, %d of them through qemu-img check", len(clones), qemu)
		})
	}
}

// dfRepairQemuCheck repairs the leaks of im, open on the clone pair img
// and data, closes it and has qemu-img check find the pair clean.
func dfRepairQemuCheck(t *testing.T, what string, im *Image, img, data *memdev.Dev) {
	t.Helper()
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	if err != nil || !r.Clean() {
		t.Errorf("%s: leak repair: %v %+v", what, err, r)
		return
	}
	dfQemuCheckCrash(t, what, img, data, true)
}

// A discard on an image with a raw data file left the data file's bytes
// where the device (a plain file, the default opener) claims no
// efficient zeroing: the disk read zeros there, the data file, which
// must equal it, did not (QEMU passes the discard down to it).
func TestRegress_RawDataFileDiscardWithoutAllocate(t *testing.T) {
	dir := t.TempDir()
	img, data := filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
	if err := Create(img, CreateOptions{Size: 1 << 20, ClusterSize: 4096, DataFile: data, DataFileRaw: true}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(img, Options{Opener: DefaultOpener})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, 64<<10), 0)
	if err := im.Discard(0, 16<<10); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if i := testkit.FirstDiff(b[:16<<10], make([]byte, 16<<10)); i >= 0 {
		t.Fatalf("the raw data file keeps %#x at %d of a discarded range", b[i], i)
	}
	testkit.QemuCheck(t, img) // the header names the data file by its full path
}
