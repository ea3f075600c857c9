package imgopen

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/internal/testkit"
)

// TestOpen_VMDK: a VMDK image opens read-only as "vmdk", with -f vmdk
// and probed ("KDMV" for a sparse extent, "version=1" for a descriptor
// file, whose extent files open with it), refusing writes (vmdk's
// KD1). Opened for writing, every subformat takes writes (KD8, KD12),
// a snapshot over a parent too (KD13); an image whose grains overlap is
// refused with ErrVMDKReadOnly and left as it was.
func TestOpen_VMDK(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	var paths []string
	for _, sub := range []string{"monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"} {
		p := filepath.Join(dir, sub+".vmdk")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, "10M")
		paths = append(paths, p)
	}
	top := filepath.Join(dir, "top.vmdk")
	base := filepath.Join(dir, "base.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "10M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", base, "-F", "vmdk", top)
	overlap := filepath.Join(dir, "overlap.vmdk")
	testkit.OverlappingVMDK(t, overlap)
	paths = append(paths, top, overlap)
	for _, p := range paths {
		for _, f := range []string{"", "vmdk"} {
			o, err := Open(Spec{Path: p, Format: f, AIO: "threads", ReadOnly: true})
			if err != nil {
				t.Fatalf("Open(%s, %q): %v", p, f, err)
			}
			size, _ := o.Dev.Size()
			if o.Format() != "vmdk" || o.VMDK == nil || o.File == nil || (size != 10<<20 && p != overlap) {
				t.Errorf("Open(%s, %q): format %s, vmdk %v, file %v, size %d", p, f, o.Format(), o.VMDK != nil, o.File != nil, size)
			}
			if err := o.Dev.Writev(0, [][]byte{{1}}); !errors.Is(err, block.ErrReadOnly) {
				t.Errorf("write to %s: %v", p, err)
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
		}
		before, _ := os.ReadFile(p)
		o, err := Open(Spec{Path: p, AIO: "threads"})
		if p != overlap {
			if err != nil {
				t.Fatalf("read-write open of %s: %v", p, err)
			}
			if err := o.Dev.Writev(0, [][]byte{make([]byte, 64<<10)}); err != nil {
				t.Errorf("write to %s: %v", p, err)
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, ErrVMDKReadOnly) {
			t.Errorf("read-write open of %s: %v", p, err)
		}
		if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
			t.Errorf("refused read-write open changed %s", p)
		}
	}
}

// TestOpen_VMDKReadErrorNotReadOnly: a read of the image file that fails
// while a writable open sets a monolithicSparse image up is that error,
// not ErrVMDKReadOnly (it said "open the image read-only" when the
// read-only retry's reads succeeded).
func TestOpen_VMDKReadErrorNotReadOnly(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", p, "4M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write 0 128k", p)
	failed := 0
	for i := int64(0); ; i++ {
		inj := errordev.OnOp(errordev.Read, i, errordev.ErrInjectedEIO)
		o, err := Open(Spec{Path: p, AIO: "threads", WrapFile: func(d block.Device) block.Device {
			return errordev.New(d, inj, errordev.Options{})
		}})
		if inj.Fired() == 0 {
			if err != nil {
				t.Fatalf("open without a fault: %v", err)
			}
			o.Close()
			break
		}
		if err == nil {
			o.Close()
			continue // a read the open does not depend on (probing)
		}
		failed++
		if errors.Is(err, ErrVMDKReadOnly) || !errors.Is(err, errordev.ErrInjected) {
			t.Errorf("read %d failed: %v (want the read's error)", i, err)
		}
	}
	if failed < 3 {
		t.Errorf("only %d failing reads failed the open", failed)
	}
}
