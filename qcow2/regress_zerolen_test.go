package qcow2

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// TestRegress_ZeroLengthRequestsChangeNothing: a write, zeroing or
// discard of no bytes changes nothing. A zero-length write used to
// allocate and link a cluster; on an extended-L2 image it marked every
// subcluster allocated, so the guest read a discarded cluster's old bytes
// there, and one at the virtual end linked a cluster past it that a
// growth then showed (Q18).
func TestRegress_ZeroLengthRequestsChangeNothing(t *testing.T) {
	for _, xl2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "standard", true: "extended-l2"}[xl2], func(t *testing.T) {
			const cs, size = 64 << 10, 16 << 20
			im, _ := testImage(t, CreateOptions{Size: size, ExtendedL2: xl2}, Options{})
			secret := bytes.Repeat([]byte("SECRET!!"), cs/8)
			for k := int64(10); k < 20; k++ {
				if _, err := im.WriteAt(secret, k*cs); err != nil {
					t.Fatal(err)
				}
			}
			// Freed and, after the flush, free to be handed out again.
			if err := im.Discard(10*cs, 10*cs); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			before := im.Metrics().ClustersAllocated
			for k := int64(0); k < 5; k++ {
				if err := im.Writev(k*cs, nil); err != nil {
					t.Fatal(err)
				}
				if err := im.WriteZeroes(k*cs, 0, block.MayUnmap); err != nil {
					t.Fatal(err)
				}
				if err := im.Discard(k*cs, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := im.Writev(size, nil); err != nil {
				t.Fatalf("a zero-length write at the end: %v", err)
			}
			if n := im.Metrics().ClustersAllocated - before; n != 0 {
				t.Errorf("zero-length requests allocated %d clusters", n)
			}
			got := make([]byte, 5*cs)
			if _, err := im.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, got, make([]byte, 5*cs), "clusters after zero-length requests")
			if err := im.Truncate(2 * size); err != nil {
				t.Fatal(err)
			}
			got = got[:cs]
			if _, err := im.ReadAt(got, size); err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, got, make([]byte, cs), "the grown range (Q18)")
		})
	}
}

// TestRegress_CloseRacesBackingRead: reads served by the backing file
// while Close runs get data or ErrClosed. Close used to set the backing
// device to nil under reads that had passed the closed check (a data
// race, and a nil dereference between its check and its use).
func TestRegress_CloseRacesBackingRead(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(dir, "top.qcow2")
	rounds := 100
	if raceEnabled {
		rounds = 30
	}
	for range rounds {
		if err := Create(top, CreateOptions{BackingFile: base, BackingFormat: "raw"}); err != nil {
			t.Fatal(err)
		}
		im, err := Open(top, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				buf := make([]byte, 4096)
				<-start
				for i := range 200 {
					if err := im.Readv(int64(i%64)*65536, [][]byte{buf}); err != nil {
						if !errors.Is(err, os.ErrClosed) {
							t.Errorf("read racing Close: %v", err)
						}
						return
					}
				}
			})
		}
		close(start)
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}
}

// TestRegress_CloseRacesDiscard: a Close racing a discard waits for the
// discarded clusters to be freed, so the image it leaves has no leaks.
// Close used to wait only for allocations, and flushed the discard's new
// L2 entries before it freed the old clusters, which then leaked.
func TestRegress_CloseRacesDiscard(t *testing.T) {
	testkit.NeedQemu(t)
	const cs = 64 << 10
	p := filepath.Join(t.TempDir(), "a.qcow2")
	rounds := 60
	if raceEnabled {
		rounds = 15
	}
	for i := range rounds {
		if err := Create(p, CreateOptions{Size: 64 * cs}); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(bytes.Repeat([]byte{1}, 64*cs), 0); err != nil {
			t.Fatal(err)
		}
		var derr error
		var wg sync.WaitGroup
		wg.Go(func() { derr = im.Discard(0, 64*cs) })
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if r := testkit.QemuCheckReport(p, testkit.QemuCheckResult.Clean); r != nil {
			t.Fatalf("round %d (discard: %v): %v", i, derr, r)
		}
	}
}

// TestRegress_ResizeWholeSectors: Truncate and Shrink refuse a size that
// is not whole 512-byte sectors, as QEMU: it would see the image
// rounded down and never see the bytes past. The size stays.
func TestRegress_ResizeWholeSectors(t *testing.T) {
	im, _ := testImage(t, CreateOptions{Size: 4 << 20}, Options{})
	if err := im.Truncate(3148038); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Truncate(3148038): %v, want ErrUnsupported", err)
	}
	if err := im.Shrink(1<<20 + 1); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Shrink(1 MiB + 1): %v, want ErrUnsupported", err)
	}
	if n, err := im.Size(); err != nil || n != 4<<20 {
		t.Errorf("size after refused resizes: %d, %v", n, err)
	}
}
