package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// failLanded applies a header write whose backing_file_size is failSize
// and then reports it failed (a write that may have landed, as the
// engine assumes), once; it records cluster 0 before each header write.
type failLanded struct {
	block.Device
	mem      *memdev.Dev
	mu       sync.Mutex
	failSize uint32
	failed   bool
	before   [][]byte
	writes   [][]byte
}

func (d *failLanded) Writev(off int64, bufs [][]byte) error {
	if off == 0 {
		w := bytes.Join(bufs, nil)
		d.mu.Lock()
		d.before = append(d.before, append([]byte(nil), d.mem.Bytes()[:len(w)]...))
		d.writes = append(d.writes, w)
		fail := !d.failed && d.failSize != 0 && binary.BigEndian.Uint32(w[16:]) == d.failSize
		if fail {
			d.failed = true
		}
		d.mu.Unlock()
		if err := d.Device.Writev(off, bufs); err != nil {
			return err
		}
		if fail {
			return errors.New("injected EIO after the write landed")
		}
		return nil
	}
	return d.Device.Writev(off, bufs)
}

// TestHeaderRewriteAfterFailedLandedWrite: a backing file rename whose
// last header write fails but lands leaves the media's header unknown
// to the image (the old one or the new one). Close (lazy refcounts: it
// clears the dirty bit) used to plan its header write against the old
// bytes, zeroing the new name's second sector in the same write as the
// first sector, which a torn write turned into a header naming half
// zeros (FM6; found by review). Now no header is written until the image
// is reopened: the dirty bit stays, and the next open repairs.
func TestHeaderRewriteAfterFailedLandedWrite(t *testing.T) {
	const cs = 4096
	long := strings.Repeat("d", 700)
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: cs, LazyRefcounts: true, BackingFile: "b1", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	dev := &failLanded{Device: mem, mem: mem}
	im, err := OpenDevice(dev, Options{NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, im, 0, bytes.Repeat([]byte{1}, cs)) // sets the dirty bit (lazy)
	dev.mu.Lock()
	dev.failSize = uint32(len(long))
	dev.mu.Unlock()
	if err := im.SetBacking(long, "qcow2"); err == nil {
		t.Fatal("injected failure not seen")
	}
	if h, err := format.ParseHeader(mem.Bytes()[:cs]); err != nil || h.BackingFile != long {
		t.Fatalf("setup: the failed write should have landed: %v %q", err, h.BackingFile)
	}
	nBefore := len(dev.writes)
	if err := im.Close(); err == nil {
		t.Error("Close after a failed header write reported no error")
	}
	if n := len(dev.writes) - nBefore; n != 0 {
		t.Fatalf("Close wrote the header %d times after a failed header write", n)
	}
	// The media holds the header that landed, dirty; the next open
	// repairs the refcounts and finds the image clean.
	h, err := format.ParseHeader(mem.Bytes()[:cs])
	if err != nil || h.BackingFile != long || h.IncompatibleFeatures&format.IncompatDirty == 0 {
		t.Fatalf("after Close: %v, backing %d bytes, features %#x", err, len(h.BackingFile), h.IncompatibleFeatures)
	}
	im2, err := OpenDevice(mem, Options{NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := im2.Header().BackingFile; got != long {
		t.Errorf("reopened: backing %d bytes", len(got))
	}
	mustClean(t, im2)
	if err := im2.Close(); err != nil {
		t.Fatal(err)
	}
}
