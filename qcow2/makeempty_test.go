package qcow2

import (
	"bytes"
	"math/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block/latdev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// activeTables counts the active L1 table's L2 tables.
func activeTables(im *Image) int {
	n := 0
	for _, e := range im.l1.Load().entries() {
		if e.Offset() != 0 {
			n++
		}
	}
	return n
}

// TestMakeEmpty_FreesTables: MakeEmpty leaves no L2 table that maps
// nothing, as QEMU's make_empty leaves an empty L1 (commit used to keep
// them: on a 1-bit refcount overlay a snapshot after the commit then
// failed with a refcount overflow, where qemu-img's succeeds); tables a
// snapshot shares stay with it, and the snapshot reads as before.
func TestMakeEmpty_FreesTables(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		name string
		co   CreateOptions
		snap bool
	}{
		{"refcount1", CreateOptions{Size: 16 * mb, ClusterSize: 4096, RefcountBits: 1}, false},
		{"xl2", CreateOptions{Size: 16 * mb, ClusterSize: 64 << 10, ExtendedL2: true}, false},
		{"snapshot", CreateOptions{Size: 16 * mb, ClusterSize: 4096}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, _ := testImage(t, tc.co, Options{})
			span := int64(tc.co.ClusterSize) << im.g.L2Bits
			var want []byte
			for off := int64(0); off < tc.co.Size; off += span {
				writeAt(t, im, off+4096, pattern(8192, byte(off/span)))
			}
			if tc.snap {
				want = readBack(t, im, 0, int(tc.co.Size))
				if _, err := im.CreateSnapshot("s"); err != nil {
					t.Fatal(err)
				}
				// Half the tables become the active L1's own copies.
				for off := int64(0); off < tc.co.Size; off += 2 * span {
					writeAt(t, im, off, pattern(4096, 9))
				}
			}
			if n := activeTables(im); n == 0 {
				t.Fatal("no tables before MakeEmpty")
			}
			if err := im.MakeEmpty(); err != nil {
				t.Fatal(err)
			}
			if n := activeTables(im); n != 0 {
				t.Errorf("%d L2 tables left in the active L1 after MakeEmpty", n)
			}
			if got := readBack(t, im, 0, int(tc.co.Size)); !bytes.Equal(got, make([]byte, tc.co.Size)) {
				t.Error("the disk does not read zeros after MakeEmpty")
			}
			if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
				t.Fatalf("check: %v %+v", err, r)
			}
			if tc.snap {
				if err := im.ApplySnapshot("s"); err != nil {
					t.Fatal(err)
				}
				if got := readBack(t, im, 0, int(tc.co.Size)); !bytes.Equal(got, want) {
					t.Error("the snapshot changed")
				}
				return
			}
			// The refcount-overflow symptom: a snapshot of the empty disk.
			if _, err := im.CreateSnapshot("after"); err != nil {
				t.Errorf("snapshot after MakeEmpty: %v", err)
			}
			// The image is usable: new tables come and read back.
			off := min(span, tc.co.Size/2) + 512
			writeAt(t, im, off, pattern(4096, 3))
			if got := readBack(t, im, off, 4096); !bytes.Equal(got, pattern(4096, 3)) {
				t.Error("write after MakeEmpty lost")
			}
		})
	}
}

// TestMakeEmpty_ConcurrentWrites: writers allocating in many tables
// while MakeEmpty runs again and again never fail ("L2 table vanished"
// when a table was dropped between an allocation's table and its link:
// the slow device keeps each allocation in that window for a while),
// and the writes after the last MakeEmpty read back; Check and qemu-img
// check pass.
func TestMakeEmpty_ConcurrentWrites(t *testing.T) {
	const size = 16 << 20
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: size, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(latdev.New(mem, latdev.Model{PerOp: 200 * time.Microsecond}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var stop sync.WaitGroup
	done := make(chan struct{})
	errc := make(chan error, 4)
	for w := 0; w < 4; w++ {
		stop.Add(1)
		go func(w int) {
			defer stop.Done()
			r := rand.New(rand.NewSource(int64(w)))
			buf := pattern(4096, byte(w))
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := im.WriteAt(buf, r.Int63n(size/4096)*4096); err != nil {
					errc <- err
					return
				}
				time.Sleep(time.Millisecond) // tables stay nearly empty
			}
		}(w)
	}
	rounds := 10
	if raceEnabled {
		rounds = 2
	}
	var merr error
	for i := 0; i < rounds && merr == nil; i++ {
		merr = im.MakeEmpty()
	}
	close(done)
	stop.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("write beside MakeEmpty: %v", err)
	}
	if merr != nil {
		t.Fatalf("MakeEmpty: %v", merr)
	}
	for off := int64(0); off < size; off += 1 << 20 {
		writeAt(t, im, off, pattern(4096, 5))
	}
	for off := int64(0); off < size; off += 1 << 20 {
		if got := readBack(t, im, off, 4096); !bytes.Equal(got, pattern(4096, 5)) {
			t.Fatalf("write at %d after MakeEmpty lost", off)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(testkit.Dir(t), "t.qcow2")
	if err := mem.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	ownCheck(t, p)
	testkit.QemuCheck(t, p)
}
