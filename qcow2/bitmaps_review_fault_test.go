package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// bitmapWorkload is the guest operations of the fault sweeps.
func bitmapWorkload(t *testing.T, im *Image) error {
	t.Helper()
	for _, op := range bitmapOps {
		if err := op.do(im); err != nil {
			return err
		}
	}
	return nil
}

// checkBitmapsCover fails t unless every bitmap of raw that claims to be
// valid holds every dirty bit of the same bitmap in want, and qemu-img
// check finds no corruption (leaks are allowed after a failure).
func checkBitmapsCover(t *testing.T, what string, raw []byte, want []rawBitmap) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := testkit.QemuCheckReport(p, testkit.QemuCheckResult.NoCorruption); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	checkBitmapsHold(t, what, raw, want)
}

// checkBitmapsHold is checkBitmapsCover without qemu-img check.
func checkBitmapsHold(t *testing.T, what string, raw []byte, want []rawBitmap) {
	t.Helper()
	for _, b := range rawBitmaps(t, raw) {
		if !b.valid() {
			continue
		}
		for _, w := range want {
			if w.name != b.name {
				continue
			}
			for i, c := range w.bits {
				var g byte
				if i < len(b.bits) {
					g = b.bits[i]
				}
				if c&^g != 0 {
					t.Fatalf("%s: bitmap %s claims to be valid and misses granules of byte %d (%08b, want %08b)", what, b.name, i, g, c)
				}
			}
		}
	}
}

// A device error at every op of the Close that stores the bitmaps (once,
// and for good) leaves every bitmap that claims to be valid with every
// write, and no corruption; the same after a crash right after the
// failure.
func TestBitmapsReview_FaultAtEveryStoreOp(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	base, err := os.ReadFile(bitmapImage(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	run := func(inj func() errordev.Injector) (*memdev.Dev, *errordev.Dev, error) {
		mem := memdev.FromBytes(base, memdev.Options{})
		dev := errordev.New(mem, nil, errordev.Options{})
		im, err := OpenDevice(dev, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := bitmapWorkload(t, im); err != nil {
			t.Fatal(err)
		}
		if err := im.Flush(); err != nil {
			t.Fatal(err)
		}
		if inj != nil {
			dev.SetInjector(inj())
		}
		return mem, dev, im.Close()
	}
	mem, _, err := run(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := rawBitmaps(t, mem.Bytes())
	if len(want) != 3 || !want[0].valid() {
		t.Fatalf("bitmaps after a clean Close: %+v", want)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, sticky := range []bool{false, true} {
		for i := int64(0); ; i++ {
			mem, dev, cerr := run(func() errordev.Injector {
				if sticky {
					return errordev.OnIndexSticky(i, errordev.ErrInjectedEIO)
				}
				return errordev.OnIndex(i, errordev.ErrInjectedEIO)
			})
			if dev.Injected() == 0 {
				if i < 4 {
					t.Fatalf("only %d ops in Close", i)
				}
				break
			}
			if cerr == nil && !sticky {
				t.Logf("op %d: Close succeeded despite the fault", i)
			}
			what := func(s string) string {
				return fmt.Sprintf("%s after a fault at op %d of Close (sticky %v)", s, i, sticky)
			}
			checkBitmapsCover(t, what("as left"), mem.Bytes(), want)
			if !sticky {
				checkBitmapsCover(t, what("crash"), mem.CrashClone(rng, 0.5).Bytes(), want)
				// A reopen and Close in peace is clean but for leaks, and
				// keeps whatever it can.
				m2 := memdev.FromBytes(mem.Bytes(), memdev.Options{})
				im, err := OpenDevice(m2, Options{})
				if err != nil {
					t.Fatalf("op %d: reopen: %v", i, err)
				}
				if err := im.Close(); err != nil {
					t.Fatalf("op %d: reclose: %v", i, err)
				}
				checkBitmapsCover(t, what("reopened"), m2.Bytes(), want)
			}
		}
	}
}

// A device error at every op of the open and of the first write: the
// open fails or the bitmaps are IN_USE (or stale) before the write, and
// whatever the write and the Close do, no valid bitmap misses it.
func TestBitmapsReview_FaultAtEveryOpenOp(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	base, err := os.ReadFile(bitmapImage(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	// want: what the write alone dirties (b0, b4k enabled).
	mem := memdev.FromBytes(base, memdev.Options{})
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const at = 8<<20 + 32<<10
	if _, err := im.WriteAt(bytes.Repeat([]byte{9}, 4096), at); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	want := rawBitmaps(t, mem.Bytes())
	rng := rand.New(rand.NewPCG(8, 8))
	for i := int64(0); ; i++ {
		mem := memdev.FromBytes(base, memdev.Options{})
		dev := errordev.New(mem, errordev.OnIndex(i, errordev.ErrInjectedEIO), errordev.Options{})
		im, err := OpenDevice(dev, Options{})
		what := fmt.Sprintf("fault at op %d (open: %v", i, err)
		if err == nil {
			_, werr := im.WriteAt(bytes.Repeat([]byte{9}, 4096), at)
			c := mem.CrashClone(rng, 0.5)
			what += fmt.Sprintf(", write: %v", werr)
			if landedAt(t, c.Bytes(), at) {
				checkBitmapsCover(t, what+"): crash before Close", c.Bytes(), want)
			}
			what += fmt.Sprintf(", close: %v", im.Close())
		}
		if dev.Injected() == 0 {
			break
		}
		if landedAt(t, mem.Bytes(), at) {
			checkBitmapsCover(t, what+"): after Close", mem.Bytes(), want)
		}
	}
}

// landedAt reports whether the image raw reads 9 at guest offset at.
func landedAt(t *testing.T, raw []byte, at int64) bool {
	t.Helper()
	im, err := OpenDevice(memdev.FromBytes(raw, memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b := make([]byte, 1)
	if _, err := im.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	return b[0] == 9
}
