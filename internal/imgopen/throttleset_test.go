package imgopen

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
)

// TestReleaseThrottles_JSONBacking: ReleaseThrottles reaches a throttle
// node inside a json: backing file the engine opened under the image,
// for an image opened by name and for a qcow2 node of a spec: a read of
// the backing file waiting out a throttle of 4 KiB/s completes once
// released. Only the image's own spec's throttles were released, so a
// forced qnbd shutdown waited out the backing file's backlog (minutes
// here).
func TestReleaseThrottles_JSONBacking(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(dir, "top.qcow2")
	// The header's backing format is the spec's root driver, as in
	// QEMU (raw: "Block format 'raw' does not support the option").
	if err := qcow2.Create(top, qcow2.CreateOptions{Size: 4 << 20, BackingFormat: "throttle",
		BackingFile: `json:{"driver":"throttle","bps-total":4096,"file":{"driver":"raw","file":{"driver":"file","filename":"` + base + `"}}}`}); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func() (*Opened, error){
		"by name": func() (*Opened, error) { return Open(Spec{Path: top, ReadOnly: true}) },
		"spec": func() (*Opened, error) {
			return OpenSpec(`json:{"driver":"qcow2","read-only":true,"file":{"driver":"file","filename":"`+top+`"}}`, Spec{ReadOnly: true})
		},
	} {
		o, err := open()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		done := make(chan error, 1)
		go func() { done <- block.ReadAt(o.Dev, make([]byte, 1<<20), 0) }()
		time.Sleep(100 * time.Millisecond) // the read waits in the throttle (256 s)
		o.ReleaseThrottles()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: read: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the read still waits in the backing file's throttle after ReleaseThrottles", name)
		}
		if err := o.Close(); err != nil {
			t.Errorf("%s: close: %v", name, err)
		}
	}
}
