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

// A crash at any op of the Close that stores many bitmaps (a directory
// and tables over several 512-byte clusters, some bitmaps disabled)
// leaves every bitmap that claims to be valid with every write, and no
// corruption.
func TestBitmapsReview_CrashStoringManySmallClusters(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := filepath.Join(t.TempDir(), "many.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "24M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", "-f", "qcow2", p)
	nb := 16
	if testing.Short() {
		nb = 8
	}
	for i := range nb {
		args := []string{"bitmap", "--add", "-g", fmt.Sprint(512 << (i % 5)), p, fmt.Sprintf("bitmap-with-a-long-name-%02d", i)}
		if i%4 == 3 {
			args = append(args[:2], append([]string{"--disable"}, args[2:]...)...)
		}
		testkit.MustRun(t, "qemu-img", args...)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	mem := memdev.FromBytes(raw, memdev.Options{})
	dev := &hookDev{Dev: mem, before: func() {}}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 511, 64 << 10, 3<<20 + 7, 20<<20 - 1} {
		if _, err := im.WriteAt(bytes.Repeat([]byte{byte(2 + i)}, 1500), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.WriteZeroes(5<<20, 70000, 0); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	var clones [][]byte
	dev.before = func() {
		clones = append(clones, mem.CrashClone(rng, rng.Float64()).Bytes())
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	dev.before = func() {}
	want := rawBitmaps(t, mem.Bytes())
	if len(want) != nb || !want[0].valid() {
		t.Fatalf("after a clean Close: %d bitmaps, first valid %v", len(want), len(want) > 0 && want[0].valid())
	}
	valid := 0
	seen := map[string]bool{}
	for i, c := range clones {
		if seen[string(c)] {
			continue
		}
		seen[string(c)] = true
		if i%5 == 0 {
			checkBitmapsCover(t, fmt.Sprintf("clone %d of %d", i, len(clones)), c, want)
		} else {
			checkBitmapsHold(t, fmt.Sprintf("clone %d of %d", i, len(clones)), c, want)
		}
		for _, b := range rawBitmaps(t, c) {
			if b.valid() {
				valid++
			}
		}
	}
	t.Logf("%d clones, %d distinct, %d valid bitmaps checked", len(clones), len(seen), valid)
	if valid == 0 {
		t.Fatal("no clone had a valid bitmap: the test proves nothing")
	}
	testkit.QemuCheck(t, writeTemp(t, mem.Bytes()))
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
