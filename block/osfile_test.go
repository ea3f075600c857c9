package block_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
)

// TestOSFile_Conformance runs the conformance kit on OSFile: no Allocate
// and no request flags in Caps, a read-only variant, no crash view.
func TestOSFile_Conformance(t *testing.T) {
	paths := map[block.Device]string{}
	blocktest.Run(t, func(t *testing.T) block.Device {
		path := filepath.Join(t.TempDir(), "img")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := block.OpenOSFile(path, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		paths[d] = path
		return d
	}, blocktest.Config{
		ReadOnly: func(t *testing.T, d block.Device) block.Device {
			ro, err := block.OpenOSFile(paths[d], true)
			if err != nil {
				t.Fatal(err)
			}
			return ro
		},
	})
}
