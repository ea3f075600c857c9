package qcow2

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// TestCompressedWriteRacesDowngrade: SetVersion(2) on a zstd image runs
// while a compressed write's zstd stream is being written (nothing
// compressed is linked yet, so the downgrade to zlib is allowed). The
// stream must not be linked into the image that now says zlib, where it
// would read as corrupt deflate: the write compresses again with zlib
// (found by review).
func TestCompressedWriteRacesDowngrade(t *testing.T) {
	var armed atomic.Bool
	reached, release := make(chan struct{}), make(chan struct{})
	mem := memdev.New(memdev.Options{OnWrite: func(off, n int64) {
		if n < 4096 && armed.CompareAndSwap(true, false) {
			close(reached)
			<-release
		}
	}})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: 4096, CompressionType: "zstd"}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	writeAt(t, im, 64<<10, pattern(4096, 1)) // the L2 table exists
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("compressible "), 4096/13+1)[:4096]
	armed.Store(true)
	done := make(chan error, 1)
	go func() { done <- im.WriteCompressed(0, data) }()
	<-reached
	verr := im.SetVersion(2)
	close(release)
	werr := <-done
	t.Logf("SetVersion(2): %v; WriteCompressed: %v; header version %d, compression type %d",
		verr, werr, im.Header().Version, im.Header().CompressionType)
	if verr != nil || werr != nil {
		return // one refused: fine
	}
	got := make([]byte, 4096)
	if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("acknowledged compressed write unreadable after the downgrade: err=%v equal=%v (version %d, type %d)",
			err, bytes.Equal(got, data), im.Header().Version, im.Header().CompressionType)
	}
	_ = format.CompressionZlib
}
