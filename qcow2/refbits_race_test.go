package qcow2

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestSetRefcountBitsRacesLockFreeOverwrite (for the race detector; found
// by review): SetRefcountBits writes im.g's refcount fields under mu; a
// lock-free overwrite of a COPIED cluster of a LUKS image copied im.g by
// value (overlapCheckData -> staticOverlap -> cryptoAreaOverlap ->
// CryptoHeader.Clusters), which reads them too.
func TestSetRefcountBitsRacesLockFreeOverwrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "e.qcow2")
	cryptCreate(t, p, CreateOptions{Size: 1 << 20, ClusterSize: 4096})
	im := cryptOpen(t, p, Options{})
	defer im.Close()
	buf := make([]byte, 4096)
	if _, err := im.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	var stop, started atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			started.Store(true)
			if _, err := im.WriteAt(buf, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for !started.Load() {
	}
	for i := 0; i < 50; i++ {
		b := []uint32{32, 16}[i%2]
		if err := im.SetRefcountBits(b); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
}
