package qcow2

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCacheReview_FaultSweepTinyCache sweeps faults over a workload on
// the smallest caches the options allow (two 512-byte L2 slices, two
// refcount blocks), where most device writes are eviction write-backs
// of L2 tables and refcount blocks from Gets (cache C6) and their
// dependency flushes (C5), not Flush's. A failed write-back keeps its
// table dirty; after the fault, reads all over the image (more
// evictions, and rereads of the tables dropped meanwhile) must still
// return every acknowledged write: a failure may not let a newer copy be
// dropped and an older one reread. Then the sweep's checks: the crash
// clone, the retried Flush and the final image (Check, qemu-img check,
// flushed data).
func TestCacheReview_FaultSweepTinyCache(t *testing.T) {
	t.Parallel()
	p := func(n int, s byte) []byte { return pattern(n, s) }
	const l2span = 64 * 512 // guest bytes one L2 table maps
	wl := sweepWorkload{
		name: "tiny-cache-evict",
		co:   CreateOptions{ClusterSize: 512, RefcountBits: 64},
		o:    Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 512},
		run: func(r *sweepRun) error {
			for i := range 30 {
				// Round robin over 10 L2 tables: every write evicts.
				off := int64(i%10)*l2span + int64(i/10)*1536 + 100
				r.write(off, p(900, byte(i+1)))
				switch i {
				case 9, 21:
					r.flush()
				case 14:
					r.discard(2*l2span, 4096) // frees clusters, refcounts drop (Q3)
				case 17:
					r.zero(4*l2span, 2048, 0)
				}
			}
			if err := readBackAll(r); err != nil {
				return err
			}
			r.write(7*l2span+5000, p(3000, 0x55))
			if err := readBackAll(r); err != nil {
				return err
			}
			return r.flush()
		},
	}
	// runSweep's loop, except that a point past the end of a run is no
	// error: ristretto's admission is randomised, so which clean tables
	// are reread, and so the op count, varies from run to run.
	seed := testkit.Seed(t)
	var st sweepStats
	for ki, k := range sweepKinds {
		if ki >= 2 && !sweepFull() || ki >= 1 && raceEnabled {
			break
		}
		t.Run(k.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed^uint64(ki)<<32, 99))
			total, _ := sweepRunOnce(t, wl, k, -1, rng, &st, false)
			if t.Failed() {
				return
			}
			points := int64(sweepDefaultPoints)
			if k.sticky {
				points /= 3
			}
			if raceEnabled {
				points = 5
			}
			step := max(float64(total)/float64(points), 1)
			if sweepFull() {
				step = 1
			}
			phase := rng.Float64() * step
			fired := 0
			for at := phase; int64(at) < total; at += step {
				if _, ok := sweepRunOnce(t, wl, k, int64(at), rng, &st, fired%sweepQemuEvery == 0); ok {
					fired++
				}
				if t.Failed() {
					return
				}
			}
			t.Logf("%d device ops, %d faults fired", total, fired)
			if fired == 0 {
				t.Error("no fault fired")
			}
		})
	}
	t.Logf("fault sweep: %d runs, %d faults injected, %d reopened images checked, %d qemu-img checks, %d recovered after retry, %d faults swallowed",
		st.runs, st.faults, st.reopens, st.qemuRuns, st.recovered, st.swallowed)
}

// readBackAll reads the whole disk in 4 KiB pieces and compares it with
// the model, except sectors a failed request touched. A read that fails
// (a sticky fault, or the fault on an eviction) ends it with the read's
// error; a mismatch is an error the sweep reports as not injected.
func readBackAll(r *sweepRun) error {
	buf := make([]byte, 4096)
	for off := int64(0); off < int64(len(r.m.cur)); off += int64(len(buf)) {
		if _, err := r.im.ReadAt(buf, off); err != nil {
			if r.err == nil {
				r.err, r.op = err, fmt.Sprintf("ReadAt(%d, %d)", off, len(buf))
			}
			return err
		}
		for s := int64(0); s < int64(len(buf)); s += sweepSector {
			if r.m.failed[(off+s)/sweepSector] {
				continue
			}
			if i := testkit.FirstDiff(buf[s:s+sweepSector], r.m.cur[off+s:off+s+sweepSector]); i >= 0 {
				return fmt.Errorf("read back at %d (after %s: %v): acknowledged data lost", off+s+int64(i), r.op, r.err)
			}
		}
	}
	return nil
}
