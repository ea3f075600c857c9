package qcow2

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestReview46_ReadsBetweenDeviceOps: before every device write of a
// guest write, zeroing or discard (allocations, COW, zeroings, table
// write-backs, fills), a lock-free read of the op's clusters runs and
// must see, sector by sector, the bytes before the op or after it, and
// exactly the model outside the op's range: never a transient state
// (zeros of a zeroing before the data over live bytes, another cluster's
// bytes, the fill's zeros over acknowledged data). The read runs on its
// own goroutine and the device op waits for it (or goes on after a
// while, should the read wait for the op: it is still checked, against
// the same before and after).
func TestReview46_ReadsBetweenDeviceOps(t *testing.T) {
	t.Parallel()
	for _, tc := range r46Cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r46ReadRace(t, tc)
		})
	}
}

// r46RaceDev runs hook before every mutating op.
type r46RaceDev struct {
	*memdev.Dev
	hook func()
}

func (d *r46RaceDev) Writev(off int64, b [][]byte) error {
	d.hook()
	return d.Dev.Writev(off, b)
}

func (d *r46RaceDev) WriteZeroes(off, n int64, f block.Flags) error {
	d.hook()
	return d.Dev.WriteZeroes(off, n, f)
}

func (d *r46RaceDev) Close() error { return nil }

func r46ReadRace(t *testing.T, tc r46Case) {
	seed := testkit.Rand(t).Uint64()
	rng := rand.New(rand.NewPCG(seed, 50))
	mem, o, model := r46NewImage(t, tc)
	var (
		mu            sync.Mutex
		im            *Image
		cs            int64
		armed         bool
		lo, hi        int64  // the op's range, cluster-aligned
		before, after []byte // the guest bytes of [lo, hi) before and after the op
		readers       sync.WaitGroup
		reads         int
		opReads       int // racing reads of the op in flight
		waited        int // reads the op went on without
	)
	check := func(got []byte, rlo int64) {
		for s := int64(0); s < int64(len(got)); s += crashSector {
			g := got[s : s+crashSector]
			if testkit.FirstDiff(g, before[s:s+crashSector]) >= 0 && testkit.FirstDiff(g, after[s:s+crashSector]) >= 0 {
				t.Errorf("a read between device ops saw, at guest %d, bytes it held neither before nor after the op: % x (before % x, after % x)",
					rlo+s, g[:16], before[s:s+16], after[s:s+16])
				return
			}
		}
	}
	dev := &r46RaceDev{Dev: mem}
	dev.hook = func() {
		mu.Lock()
		if !armed || opReads >= 16 { // the first device ops of each op
			mu.Unlock()
			return
		}
		opReads++
		rlo, rhi := lo, hi
		// Added under mu: the filler's device ops call the hook on their
		// own goroutine, and an Add after op has seen armed go false
		// would race its readers.Wait.
		readers.Add(1)
		mu.Unlock()
		done := make(chan struct{})
		go func() {
			defer readers.Done()
			defer close(done)
			got := make([]byte, rhi-rlo)
			if _, err := im.ReadAt(got, rlo); err != nil {
				t.Errorf("read: %v", err)
				return
			}
			mu.Lock()
			reads++
			mu.Unlock()
			check(got, rlo)
		}()
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
			// It waits for this op (a table the op holds): it is
			// checked when it ends, and no more reads race this op.
			mu.Lock()
			waited++
			opReads = 16
			mu.Unlock()
		}
	}
	var err error
	if im, err = OpenDevice(dev, o); err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	cs = int64(im.Geometry().ClusterSize)
	const sec = crashSector
	id := uint64(2)
	op := func(off, n int64, after0 []byte, do func() error) {
		mu.Lock()
		lo, hi = off/cs*cs, min((off+n+cs-1)/cs*cs, r46Size)
		before = append([]byte(nil), model[lo:hi]...)
		after = append([]byte(nil), before...)
		copy(after[off-lo:], after0)
		armed, opReads = true, 0
		mu.Unlock()
		if err := do(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		armed = false
		mu.Unlock()
		readers.Wait()
		copy(model[off:], after0)
	}
	ops := 160
	if raceEnabled {
		ops = 80
	}
	for i := 0; i < ops && !t.Failed(); i++ {
		switch k := rng.IntN(100); {
		case k < 60:
			n := (1 + rng.Int64N(3*cs/sec)) * sec
			off := rng.Int64N((r46Size-n)/sec) * sec
			if i < 40 {
				off = (int64(i) * 2 * cs) % (r46Size - n) / sec * sec
			}
			b := r46Data(id, off, int(n))
			id++
			op(off, n, b, func() error { _, err := im.WriteAt(b, off); return err })
		case k < 75:
			n := (1 + rng.Int64N(3*cs/sec)) * sec
			off := rng.Int64N((r46Size-n)/sec) * sec
			f := block.Flags(rng.IntN(2)) * block.MayUnmap
			op(off, n, make([]byte, n), func() error { return im.WriteZeroes(off, n, f) })
		case k < 85:
			c := rng.Int64N(r46Size/cs - 2)
			op(c*cs, 2*cs, make([]byte, 2*cs), func() error { return im.Discard(c*cs, 2*cs) })
		case k < 88:
			// A compressed cluster where the guest cluster is free.
			off := rng.Int64N(r46Size/cs) * cs
			b := r46Data(id, off, int(cs))
			id++
			written := true
			op(off, cs, b, func() error {
				err := im.WriteCompressed(off, b)
				if errors.Is(err, ErrNotCompressible) {
					written, err = false, nil
				}
				return err
			})
			if !written {
				copy(model[off:], before)
			}
		case k < 91:
			// A snapshot taken or deleted: reads of a window of the
			// disk between its device ops see it unchanged.
			off := rng.Int64N(r46Size/cs-4) * cs
			op(off, 4*cs, model[off:off+4*cs], func() error {
				if len(im.Snapshots()) == 0 {
					_, err := im.CreateSnapshot("r46")
					return err
				}
				return im.DeleteSnapshot("r46")
			})
		default:
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	im.waitFillIdle()
	if i := testkit.FirstDiff(testkit.ReadAll(t, im), model); i >= 0 {
		t.Fatalf("the image differs from the model at %d", i)
	}
	t.Logf("%d racing reads, %d waited for the op", reads, waited)
}
