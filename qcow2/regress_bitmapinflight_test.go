package qcow2

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
)

// A guest write marks the bitmaps when it starts (Q22), not when it
// lands. A ClearBitmap (or an AddBitmap, or EnableBitmap(on)) that runs
// while such a write is in flight therefore drops (or never gets) its
// bits, and the write lands after the clear: the bitmap says the range
// is clean although its bytes changed after the clear. An incremental
// backup built on it misses the write. QEMU sets the bits when a write
// completes (bdrv_co_write_req_finish), so a write in flight during a
// clear is recorded.
// A write marked the dirty bitmaps only when it started: a bitmap
// cleared (or added) while it was in flight showed its range clean
// although its bytes landed after (an incremental backup from it missed
// the write). QEMU marks at completion; the write marks again then.
func TestRegress_BitmapOpDuringWriteKeepsItsBits(t *testing.T) {
	for _, how := range []string{"sync-clear", "queue-clear", "sync-add"} {
		t.Run(how, func(t *testing.T) {
			const cs = 4096
			var armed atomic.Bool
			im, entered, release := heldWriteImage(t, func(off, n int64) bool {
				return n == 512 && armed.CompareAndSwap(true, false)
			})
			defer im.Close()
			var err error
			if how != "sync-add" {
				if err := im.AddBitmap("b", 512, true); err != nil {
					t.Fatal(err)
				}
			}
			mustWrite(t, im, bytes.Repeat([]byte{1}, cs), 0) // allocated: the next write goes in place
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			if how != "sync-add" {
				if err := im.ClearBitmap("b"); err != nil {
					t.Fatal(err)
				}
			}
			armed.Store(true)
			done := make(chan error, 1)
			var q block.Queue
			switch how {
			case "queue-clear":
				q, err = im.NewQueue(1)
				if err != nil {
					t.Fatal(err)
				}
				r := &block.Req{Op: block.OpWrite, Off: 1024, Buf: bytes.Repeat([]byte{2}, 512)}
				if err := q.Submit(r); err != nil {
					t.Fatal(err)
				}
				go func() {
					out := make([]*block.Req, 1)
					_, err := q.Wait(out, 1)
					if err == nil {
						err = out[0].Err
					}
					done <- err
				}()
			default:
				go func() {
					_, err := im.WriteAt(bytes.Repeat([]byte{2}, 512), 1024)
					done <- err
				}()
			}
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("the write never reached the device")
			}
			// The write is in flight (marked, not landed).
			switch how {
			case "sync-add":
				err = im.AddBitmap("b", 512, true)
			default:
				err = im.ClearBitmap("b")
			}
			if err != nil {
				t.Fatal(err)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if q != nil {
				q.Close()
			}
			got := make([]byte, 512)
			if _, err := im.ReadAt(got, 1024); err != nil || got[0] != 2 {
				t.Fatalf("read back %#x %v", got[0], err)
			}
			dirty, _, err := im.DirtyRun("b", 1024, 512)
			if err != nil {
				t.Fatal(err)
			}
			if !dirty {
				t.Errorf("%s: the write landed after the bitmap operation returned (its bytes read back changed), but bitmap \"b\" shows [1024,+512) clean", how)
			}
		})
	}
}
