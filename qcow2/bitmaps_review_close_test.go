package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// onWriteDev runs at once, on its own goroutine, when a write reaches
// offset at, and waits up to a few seconds for it: a guest write that
// races the Close storing the bitmaps, made to land at a chosen op.
type onWriteDev struct {
	*memdev.Dev
	at    int64
	armed atomic.Bool
	run   func()
	ran   atomic.Bool
}

func (d *onWriteDev) Writev(off int64, b [][]byte) error {
	if off == d.at && d.armed.CompareAndSwap(true, false) {
		d.ran.Store(testkit.Within(5*time.Second, d.run))
	}
	return d.Dev.Writev(off, b)
}

func (d *onWriteDev) Close() error { return nil }

// cleanBitmapImage is a 16 MiB image whose first MiB is written, with
// one enabled bitmap b (64 KiB granules) added after the write: clean.
func cleanBitmapImage(t *testing.T) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", "-f", "qcow2", p)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// A guest write that overlaps the Close storing the bitmaps (here: once
// the bits are taken, when the header names the new directory) either fails or
// leaves the bitmap IN_USE or holding it: an overwrite in place needs no
// lock, and it used to land while the bitmap was stored as valid and
// clean there.
func TestBitmapsReview_WriteRacingCloseStore(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	raw := cleanBitmapImage(t)
	mem := memdev.FromBytes(raw, memdev.Options{})
	// At the header write naming the stored bitmaps' new directory (the
	// bits are taken by then).
	dev := &onWriteDev{Dev: mem, at: 0}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt([]byte{2}, 4<<20); err != nil {
		t.Fatal(err)
	}
	var werr error
	dev.run = func() { _, werr = im.WriteAt(bytes.Repeat([]byte{3}, 4096), 64<<10) }
	dev.armed.Store(true)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if !dev.ran.Load() {
		t.Fatal("the racing write did not return")
	}
	t.Logf("racing write: %v", werr)
	p := filepath.Join(t.TempDir(), "after.qcow2")
	if err := mem.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
	_, _, code := testkit.Run(t, "qemu-io", "-c", "read -P 3 64k 4k", "-f", "qcow2", p)
	landed := code == 0
	t.Logf("racing write landed: %v", landed)
	for _, b := range rawBitmaps(t, mem.Bytes()) {
		if landed && b.valid() && !b.dirty(64<<10) {
			t.Fatalf("the racing write landed (err %v) and bitmap %s claims to be valid without it:\n%s", werr, b.name, dirtyMap(t, p, b.name))
		}
	}
}

// Guest writes on several goroutines (in place and allocating) while the
// image closes: every granule whose data differs afterwards is dirty in
// a bitmap that claims to be valid.
func TestBitmapsReview_WritersRacingClose(t *testing.T) {
	t.Parallel()
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	raw := cleanBitmapImage(t)
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for r := range rounds {
		mem := memdev.FromBytes(raw, memdev.Options{})
		im, err := OpenDevice(&onWriteDev{Dev: mem}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		im.idleWait = 50 * time.Millisecond // writers that wait for mu do not leave
		var stop atomic.Bool
		done := make(chan struct{})
		var ok atomic.Int64
		for g := range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				buf := bytes.Repeat([]byte{byte(2 + g)}, 4096)
				for i := 0; !stop.Load(); i++ {
					// Spread over the written first MiB (in place) and the
					// rest (allocating).
					off := int64((i*7919+g*104729+r*31)%4096) * 4096
					if _, err := im.WriteAt(buf, off); err == nil {
						ok.Add(1)
					}
				}
			}()
		}
		for ok.Load() < int64(20*(r+1)) {
			time.Sleep(100 * time.Microsecond)
		}
		cerr := im.Close()
		stop.Store(true)
		for range 4 {
			<-done
		}
		if cerr != nil {
			t.Logf("round %d: Close: %v", r, cerr)
		}
		got := mem.Bytes()
		cim, err := OpenDevice(memdev.FromBytes(got, memdev.Options{}), Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 16<<20)
		if _, err := cim.ReadAt(data, 0); err != nil {
			t.Fatal(err)
		}
		cim.Close()
		for _, b := range rawBitmaps(t, got) {
			if !b.valid() {
				continue
			}
			for off := uint64(0); off < 16<<20; off += b.gran {
				want := byte(0)
				if off < 1<<20 {
					want = 1
				}
				if !b.dirty(off) && !allByte(data[off:off+b.gran], want) {
					t.Fatalf("round %d: granule at %d changed and bitmap %s claims to be valid without it", r, off, b.name)
				}
			}
		}
	}
}

func allByte(p []byte, v byte) bool {
	for _, c := range p {
		if c != v {
			return false
		}
	}
	return true
}
