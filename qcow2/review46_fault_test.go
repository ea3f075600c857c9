package qcow2

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/internal/testkit"
)

// TestReview46_FailedZeroingsNoStale: a third of the device's zeroings
// fail (the reserve ahead, allocations' zeroing of reused space, punched
// holes, guest zeroings): the reserve stops (SP4), and no cluster is
// then taken for fresh while it is not (SP3): every sector reads a value
// it held (one a failed op may have left, or the last one a successful
// op wrote), with the reserve and fill on, before and after a reopen,
// and the image checks without corruption.
func TestReview46_FailedZeroingsNoStale(t *testing.T) {
	t.Parallel()
	for _, tc := range []r46Case{
		{"default", CreateOptions{ClusterSize: 4096}, Options{PreallocSize: 64 << 10}, false},
		{"fill-zeroes", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
		{"backing", CreateOptions{ClusterSize: 4096}, Options{PreallocSize: 64 << 10}, true},
		{"xl2", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true}, Options{PreallocSize: 128 << 10}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seed := testkit.Rand(t).Uint64()
			rng := rand.New(rand.NewPCG(seed, 53))
			mem, o, model := r46NewImage(t, tc)
			ed := errordev.New(mem, nil, errordev.Options{})
			im, err := OpenDevice(ed, o)
			if err != nil {
				t.Fatal(err)
			}
			ed.SetInjector(errordev.OnlyOps(errordev.Randomly(0.3, seed, errordev.ErrInjectedEIO), errordev.Zero))
			// allowed holds, per sector, the values it may read.
			allowed := make([][]uint64, r46Size/crashSector)
			for s := range allowed {
				allowed[s] = []uint64{r46Hash(model[int64(s)*crashSector:][:crashSector])}
			}
			apply := func(off int64, b []byte, err error) {
				for s := off / crashSector; s < (off+int64(len(b)))/crashSector; s++ {
					lo := s * crashSector
					h := r46Hash(b[lo-off : lo-off+crashSector])
					if err == nil {
						allowed[s] = []uint64{h}
					} else {
						allowed[s] = append(allowed[s], h)
					}
				}
				if err == nil {
					copy(model[off:], b)
				}
			}
			cs := int64(im.Geometry().ClusterSize)
			const sec = crashSector
			id := uint64(2)
			failed, lost := 0, false
			for i := 0; i < 200 && !lost; i++ {
				var off int64
				var b []byte
				var err error
				switch k := rng.IntN(100); {
				case k < 65:
					n := (1 + rng.Int64N(2*cs/sec)) * sec
					off = rng.Int64N((r46Size-n)/sec) * sec
					if i < 80 {
						off = (int64(i) * 2 * cs) % (r46Size - n) / sec * sec
					}
					b = r46Data(id, off, int(n))
					id++
					_, err = im.WriteAt(b, off)
				case k < 82:
					n := (1 + rng.Int64N(2*cs/sec)) * sec
					off = rng.Int64N((r46Size-n)/sec) * sec
					b = make([]byte, n)
					err = im.WriteZeroes(off, n, block.Flags(rng.IntN(2))*block.MayUnmap)
				case k < 94:
					off = rng.Int64N(r46Size/cs-2) * cs
					b = make([]byte, 2*cs)
					err = im.Discard(off, 2*cs)
				default:
					if err := im.Flush(); err != nil {
						lost = true
					}
					continue
				}
				if err != nil {
					failed++
					if errors.Is(err, ErrWritesLost) || errors.Is(err, ErrReadOnly) {
						lost = true
					} else if !errors.Is(err, errordev.ErrInjected) {
						t.Fatalf("op %d: %v", i, err)
					}
				}
				apply(off, b, err)
			}
			ed.SetInjector(nil)
			verify := func(what string, im *Image) {
				got := testkit.ReadAll(t, im)
				for s := range allowed {
					lo := int64(s) * crashSector
					h := r46Hash(got[lo : lo+crashSector])
					ok := false
					for _, v := range allowed[s] {
						ok = ok || v == h
					}
					if !ok {
						t.Fatalf("%s: sector at %d reads a value it never held: % x", what, lo, got[lo:lo+16])
					}
				}
			}
			verify("live", im)
			im.waitFillIdle()
			im.Close() // may fail after lost writes
			im2, err := OpenDevice(mem, o)
			if err != nil {
				t.Fatal(err)
			}
			defer im2.Close()
			r, err := im2.Check(CheckOptions{})
			if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
				t.Fatalf("check: %v %v", err, head(r.Messages, 5))
			}
			verify("reopened", im2)
			t.Logf("%d ops failed, writes lost: %v, %d zeroings injected of %d ops", failed, lost, ed.Injected(), ed.Ops())
		})
	}
}
