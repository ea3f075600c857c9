package imgopen

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// TestOpen_VMDK: a VMDK image opens read-only as "vmdk", with -f vmdk
// and probed ("KDMV" for a sparse extent, "version=1" for a descriptor
// file, whose extent files open with it). Opening one for writing is
// refused before anything is opened (vmdk's KD1).
func TestOpen_VMDK(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	var paths []string
	for _, sub := range []string{"monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse"} {
		p := filepath.Join(dir, sub+".vmdk")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, "10M")
		paths = append(paths, p)
	}
	for _, p := range paths {
		for _, f := range []string{"", "vmdk"} {
			o, err := Open(Spec{Path: p, Format: f, AIO: "threads", ReadOnly: true})
			if err != nil {
				t.Fatalf("Open(%s, %q): %v", p, f, err)
			}
			size, _ := o.Dev.Size()
			if o.Format() != "vmdk" || o.VMDK == nil || o.File == nil || size != 10<<20 {
				t.Errorf("Open(%s, %q): format %s, vmdk %v, file %v, size %d", p, f, o.Format(), o.VMDK != nil, o.File != nil, size)
			}
			if err := o.Dev.Writev(0, [][]byte{{1}}); !errors.Is(err, block.ErrReadOnly) {
				t.Errorf("write to %s: %v", p, err)
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Open(Spec{Path: p, AIO: "threads"}); !errors.Is(err, ErrVMDKReadOnly) {
			t.Errorf("read-write open: %v", err)
		}
	}
}
