package imgopen

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
)

// countWrites counts the writes that reach the device it wraps.
type countWrites struct {
	block.Device
	n int
}

func (c *countWrites) Writev(off int64, b [][]byte) error {
	c.n++
	return c.Device.Writev(off, b)
}

// TestOpen_Opened: Open returns one Opened for both formats, with the
// image, the host file and the format name, and WrapFile stands in front
// of the image's own file.
func TestOpen_Opened(t *testing.T) {
	dir := t.TempDir()
	q, r := mkQcow2(t, dir, "a.qcow2", 1<<20), mkRaw(t, dir, "b.raw", 1<<20)
	for _, tc := range []struct {
		path, format, want string
	}{
		{q, "", "qcow2"}, {q, "qcow2", "qcow2"}, {r, "", "raw"}, {r, "raw", "raw"},
	} {
		o, err := Open(Spec{Path: tc.path, Format: tc.format, AIO: "threads"})
		if err != nil {
			t.Fatalf("Open(%s, %q): %v", tc.path, tc.format, err)
		}
		if o.Format() != tc.want || (o.Image != nil) != (tc.want == "qcow2") || o.File == nil {
			t.Errorf("Open(%s, %q): format %s, image %v, file %v", tc.path, tc.format, o.Format(), o.Image != nil, o.File)
		}
		if o.Image != nil && o.Dev != block.Device(o.Image) {
			t.Errorf("a qcow2 image is not its own device: %T", o.Dev)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var host *countWrites
	o, err := Open(Spec{Path: q, AIO: "threads", WrapFile: func(d block.Device) block.Device {
		host = &countWrites{Device: d}
		return host
	}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Image == nil || o.Image.Device() != block.Device(host) || o.File != nil {
		t.Fatalf("wrapped: %+v", o)
	}
	if err := block.WriteAt(o.Dev, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if host.n == 0 {
		t.Error("no write reached the wrapped host file")
	}
	if _, err := Open(Spec{Path: filepath.Join(dir, "none"), Format: "vmdk"}); err == nil {
		t.Error("Open of an unknown format succeeded")
	}
}
