package imgopen

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// TestOpen_VPC: a VHD image opens read-only as "vpc", with -f vpc and
// probed (the "conectix" cookie at offset 0 of a dynamic disk); a fixed
// disk has no cookie there and probes as raw, as in QEMU. Opened
// read-only it refuses writes (vhd's VD1); opened for writing it takes
// them (VD6), and force-share is refused there as for qcow2.
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
	o, err := Open(Spec{Path: dyn, AIO: "threads"})
	if err != nil {
		t.Fatalf("read-write open: %v", err)
	}
	if err := o.Dev.Writev(0, [][]byte{{1}}); err != nil {
		t.Errorf("write: %v", err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Spec{Path: dyn, AIO: "threads", Opts: qcow2.Options{ForceShare: true}}); !errors.Is(err, qcow2.ErrForceShareWritable) {
		t.Errorf("read-write open with force-share: %v", err)
	}
}
