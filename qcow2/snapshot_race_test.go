package qcow2

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
)

// TestApplySnapshotRacesDelete: a delete of the snapshot an apply of
// another disk size is applying waits for the apply, which lets the
// image lock go between its resize and its switch of tables; it ran in
// between, leaving the image resized and the apply refused (found by
// review).
func TestApplySnapshotRacesDelete(t *testing.T) {
	var armed atomic.Bool
	reached, release := make(chan struct{}), make(chan struct{})
	mem := memdev.New(memdev.Options{OnWrite: func(off, n int64) {
		if armed.CompareAndSwap(true, false) {
			close(reached)
			<-release
		}
	}})
	const snapSize = 1<<20 - 512 // the shrink back to it zeroes the rest of its last cluster
	if err := CreateDevice(mem, CreateOptions{Size: snapSize, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, im, 0, pattern(64<<10, 1))
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	if err := im.Truncate(2 << 20); err != nil {
		t.Fatal(err)
	}
	writeAt(t, im, 1<<20-4096, pattern(64<<10, 2))
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	applied := make(chan error, 1)
	go func() { applied <- im.ApplySnapshot("s") }()
	<-reached // the apply's resize is writing
	deleted := make(chan error, 1)
	go func() { deleted <- im.DeleteSnapshot("s") }()
	select {
	case err := <-deleted:
		t.Errorf("DeleteSnapshot ran inside ApplySnapshot: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-applied; err != nil {
		t.Fatalf("ApplySnapshot: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("DeleteSnapshot after the apply: %v", err)
	}
	if sz, _ := im.Size(); sz != snapSize {
		t.Errorf("size %d after applying the snapshot of %d bytes", sz, snapSize)
	}
	got := make([]byte, 64<<10)
	if _, err := im.ReadAt(got, 0); err != nil || string(got) != string(pattern(64<<10, 1)) {
		t.Errorf("snapshot data: %v", err)
	}
	checkClean(t, im, mem)
}
