package imgopen

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
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

// TestOpen_ProbedOtherFormat: a file that probes as a format other than
// qcow2 and raw (here a VDI signature) is a probed *qcow2.FormatError
// through Open and through a spec's bare file name, where it was opened
// as raw; given as raw, by -f or by a raw driver node, it opens.
func TestOpen_ProbedOtherFormat(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.img")
	sig := binary.LittleEndian.AppendUint32(nil, 0xbeda107f)
	if err := os.WriteFile(p, append(make([]byte, 64), sig...), 0o644); err != nil {
		t.Fatal(err)
	}
	probed := func(what string, err error) {
		t.Helper()
		var fe *qcow2.FormatError
		if !errors.As(err, &fe) || fe.Format != "vdi" || !fe.Probed || !errors.Is(err, qcow2.ErrUnsupported) {
			t.Errorf("%s: %v, want a probed vdi FormatError", what, err)
		}
	}
	_, err := Open(Spec{Path: p, AIO: "threads"})
	probed("Open", err)
	_, err = OpenSpec("driver=quorum,vote-threshold=1,children="+p, Spec{AIO: "threads"})
	probed("quorum child", err)
	_, err = OpenSpec(`json:{"driver":"throttle","file":"`+p+`"}`, Spec{AIO: "threads"})
	probed("throttle child", err)
	o, err := Open(Spec{Path: p, Format: "raw", AIO: "threads"})
	if err != nil {
		t.Fatal(err)
	}
	o.Close()
	_, _, done := open(t, "driver=raw,file="+p)
	done()
}
