package block_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/uring/looptest"
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

// TestOSFile_FlushFailureSticks (B6): after an fsync that failed (a
// device whose write-back fails, where the kernel's next fsync would
// succeed with the writes lost), every later Flush fails.
func TestOSFile_FlushFailureSticks(t *testing.T) {
	dev := looptest.LoopDevice(t, 64<<20, 1<<20)
	f, err := block.OpenOSFile(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 4<<20)
	if err := f.Writev(0, [][]byte{buf}); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err == nil {
		t.Fatal("flush of 4 MiB onto a device that keeps 1 MiB succeeded")
	}
	for range 2 {
		if err := f.Flush(); !errors.Is(err, block.ErrFlushFailed) {
			t.Fatalf("flush after a failed flush: %v, want ErrFlushFailed", err)
		}
	}
}

// TestOSFile_FixedOnBlockDevice: a block device's Caps say Fixed (it
// never grows: engines reserve nothing past its end), a file's do not.
func TestOSFile_FixedOnBlockDevice(t *testing.T) {
	dev := looptest.LoopDevice(t, 4<<20, 8<<20)
	f, err := block.OpenOSFile(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.Caps().Fixed {
		t.Error("a block device's Caps do not say Fixed")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := block.OpenOSFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Caps().Fixed {
		t.Error("a file's Caps say Fixed")
	}
}
