package qcow2

import (
	"errors"
	"github.com/qring/qring/internal/testkit"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// TestShrink: data before the new end survives, the clusters past it
// are freed (Check and qemu-img check see no leak) and read as zeros
// once the image grows again; the partial last cluster is zeroed past
// the end.
func TestShrink(t *testing.T) {
	t.Parallel()
	for _, co := range []CreateOptions{
		{Size: 8 << 20},
		{Size: 8 << 20, ClusterSize: 4096, Compat: "0.10"},
		{Size: 8 << 20, ClusterSize: 512, RefcountBits: 64},
	} {
		im, p := testImage(t, co, Options{})
		data := pattern(8<<20, 3)
		if err := block.WriteAt(im, data, 0); err != nil {
			t.Fatal(err)
		}
		const newSize = 3000 * 1024
		if err := im.Shrink(newSize); err != nil {
			t.Fatalf("%+v: shrink: %v", co, err)
		}
		if n, _ := im.Size(); n != newSize {
			t.Fatalf("%+v: size %d after shrink", co, n)
		}
		if err := im.Shrink(-1); err == nil {
			t.Fatalf("%+v: negative size accepted", co)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		ownCheck(t, p)
		testkit.QemuCheck(t, p)
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if h := im.Header(); h.Size != newSize {
			t.Fatalf("%+v: header size %d", co, h.Size)
		}
		testkit.MustEqual(t, testkit.ReadAll(t, im), data[:newSize], "after shrink")
		if err := im.Truncate(8 << 20); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), data[:newSize]...), make([]byte, 8<<20-newSize)...)
		testkit.MustEqual(t, testkit.ReadAll(t, im), want, "after shrink and growth")
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		ownCheck(t, p)
		testkit.QemuCheck(t, p)
	}
}

// TestSetBacking rewrites the backing name and format and removes them.
func TestSetBacking(t *testing.T) {
	im, p := testImage(t, CreateOptions{Size: 1 << 20}, Options{})
	if err := im.SetBacking("base.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	if h := im.Header(); h.BackingFile != "base.qcow2" || h.BackingFormat != "qcow2" {
		t.Fatalf("header: %q %q", h.BackingFile, h.BackingFormat)
	}
	if err := im.SetBacking("", "raw"); err != nil {
		t.Fatal(err)
	}
	re := reopenReadOnly(t, im, p)
	if h := re.Header(); h.BackingFile != "" || h.BackingFormat != "" {
		t.Fatalf("after removal: %q %q", h.BackingFile, h.BackingFormat)
	}
	if err := re.SetBacking("x", "raw"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only image: %v", err)
	}
}

// TestSetVersionAndLazy: a downgrade refuses zero clusters and 64-bit
// refcounts, clears the feature bits; an upgrade and lazy refcounts
// round-trip; QEMU reads the results.
func TestSetVersionAndLazy(t *testing.T) {
	im, p := testImage(t, CreateOptions{Size: 4 << 20}, Options{})
	data := pattern(1<<20, 5)
	if err := block.WriteAt(im, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := im.WriteZeroes(2<<20, 64<<10, 0); err != nil {
		t.Fatal(err)
	}
	if err := im.SetVersion(2); !errors.Is(err, ErrZeroClusters) {
		t.Fatalf("downgrade with a zero cluster: %v", err)
	}
	if err := block.WriteAt(im, make([]byte, 64<<10), 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.SetLazyRefcounts(true); err != nil {
		t.Fatal(err)
	}
	if h := im.Header(); h.CompatibleFeatures&format.CompatLazyRefcounts == 0 {
		t.Fatal("lazy refcounts bit not set")
	}
	if err := im.SetVersion(2); err != nil {
		t.Fatalf("downgrade: %v", err)
	}
	h := im.Header()
	if h.Version != 2 || h.CompatibleFeatures != 0 {
		t.Fatalf("after downgrade: version %d, compatible %#x", h.Version, h.CompatibleFeatures)
	}
	if err := im.SetLazyRefcounts(true); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("lazy refcounts on v2: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	ownCheck(t, p)
	testkit.QemuCheck(t, p)
	if testkit.HaveQemu() {
		if out := testkit.MustRun(t, "qemu-img", "info", p); !strings.Contains(out, "compat: 0.10") {
			t.Fatalf("qemu-img info:\n%s", out)
		}
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im)[:1<<20], data, "after downgrade")
	if err := im.SetVersion(3); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)

	wide, _ := testImage(t, CreateOptions{Size: 1 << 20, RefcountBits: 64}, Options{})
	if err := wide.SetVersion(2); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("downgrade with 64-bit refcounts: %v", err)
	}
}
