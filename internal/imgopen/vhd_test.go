package imgopen

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// TestOpen_VPC: a VHD image opens read-only as "vpc", with -f vpc and
// probed (the "conectix" cookie at offset 0 of a dynamic disk); a fixed
// disk has no cookie there and probes as raw, as in QEMU. Opening one
// for writing is refused before anything is opened (vhd's VD1).
func TestOpen_VPC(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir()
	dyn, fixed := filepath.Join(dir, "d.vhd"), filepath.Join(dir, "f.vhd")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", dyn, "10M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", fixed, "10M")
	for _, tc := range []struct {
		path, format, want string
	}{
		{dyn, "", "vpc"}, {dyn, "vpc", "vpc"}, {fixed, "vpc", "vpc"}, {fixed, "", "raw"},
	} {
		o, err := Open(Spec{Path: tc.path, Format: tc.format, AIO: "threads", ReadOnly: true})
		if err != nil {
			t.Fatalf("Open(%s, %q): %v", tc.path, tc.format, err)
		}
		size, _ := o.Dev.Size()
		if o.Format() != tc.want || (o.VHD != nil) != (tc.want == "vpc") || o.File == nil ||
			(tc.want == "vpc" && size != 10514432) {
			t.Errorf("Open(%s, %q): format %s, vhd %v, file %v, size %d (qemu-img: 10514432)", tc.path, tc.format, o.Format(), o.VHD != nil, o.File != nil, size)
		}
		if tc.want == "vpc" {
			if err := o.Dev.Writev(0, [][]byte{{1}}); !errors.Is(err, block.ErrReadOnly) {
				t.Errorf("write to %s: %v", tc.path, err)
			}
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(Spec{Path: dyn, AIO: "threads"}); !errors.Is(err, ErrVPCReadOnly) {
		t.Errorf("read-write open: %v", err)
	}
}
