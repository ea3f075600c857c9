package qcow2

import (
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestModel_TinyCache runs the concurrent model workload (runModel:
// writes, reads, zeroes and discards racing on shared clusters) with the
// smallest caches QEMU allows for L2 (two entries) and two refcount
// clusters, so that nearly every lookup misses and dirty tables are
// evicted and written back under their dependencies (Q1, Q3, cache C6)
// while allocations are in flight. Check, qemu-img check (in testImage's
// cleanup) and a byte-for-byte model comparison must pass.
func TestModel_TinyCache(t *testing.T) {
	t.Parallel()
	cases := []imageCase{
		{"c64k", CreateOptions{}, Options{L2CacheSize: 2 * 4096, L2CacheEntrySize: 4096, RefcountCacheSize: 2 * 65536}, false},
		{"c64k-backing", CreateOptions{}, Options{L2CacheSize: 2 * 4096, L2CacheEntrySize: 4096, RefcountCacheSize: 2 * 65536}, true},
		{"c64k-prealloc-off", CreateOptions{}, Options{Prealloc: "off", L2CacheSize: 2 * 4096, L2CacheEntrySize: 4096, RefcountCacheSize: 2 * 65536}, false},
		{"c512", CreateOptions{ClusterSize: 512}, Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 512}, false},
		{"c512-backing-rb64", CreateOptions{ClusterSize: 512, RefcountBits: 64}, Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 512}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if (raceEnabled || testing.Short()) && (tc.name == "c64k-prealloc-off" || tc.name == "c512") {
				t.Skip("covered by the other variants under -race/-short")
			}
			runModel(t, tc.co, tc.o, tc.backing)
		})
	}
}

// TestTinyCache_Metrics checks that the tiny cache really is tiny: a
// sequential pass over a few L2 slices misses on most lookups.
func TestTinyCache_Metrics(t *testing.T) {
	im, _ := testImage(t, CreateOptions{Size: 256 << 20}, Options{L2CacheSize: 2 * 4096, L2CacheEntrySize: 4096, RefcountCacheSize: 2 * 65536})
	cs := int64(im.Geometry().ClusterSize)
	// One 4 KiB slice covers 512 clusters (32 MiB): touch 4 slices round
	// robin so a 2-entry cache thrashes.
	buf := pattern(512, 1)
	for i := 0; i < 64; i++ {
		off := int64(i%4)*512*cs + int64(i/4)*cs
		if _, err := im.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 64; i++ {
		off := int64(i%4)*512*cs + int64(i/4)*cs
		got := make([]byte, 512)
		if _, err := im.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		testkit.MustEqual(t, got, buf, "read back")
	}
	m := im.Metrics()
	l2, rc := im.CacheMetrics()
	t.Logf("L2 cache: %v", l2)
	t.Logf("refcount cache: %v", rc)
	// The bound is soft (clean tables live in ristretto, whose cost
	// accounting is approximate, and up to 4 dirty tables stay owned,
	// cache C6), but 4 slices round robin through a 2-entry cache must
	// miss beyond the 4 compulsory misses.
	if m.L2Misses <= 4 || l2.Evictions+l2.SetsRejected+l2.SetsDropped == 0 {
		t.Errorf("a 2-entry L2 cache over 4 slices: %d misses, %d hits, %d evictions, %d rejected", m.L2Misses, m.L2Hits, l2.Evictions, l2.SetsRejected)
	}
}

// TestCrash_TinyCache replays crashWorkload with two-entry caches, so
// dirty L2 slices and refcount blocks are written back by eviction
// (cache C6) between flushes: every crash clone must open with no
// corruption (leaks allowed) and keep the flushed data (Q1, Q3 across
// evictions).
func TestCrash_TinyCache(t *testing.T) {
	t.Parallel()
	points := 40
	if raceEnabled {
		points = 16
	}
	if testing.Short() {
		points = 12
	}
	cases := []imageCase{
		{"c4k", CreateOptions{ClusterSize: 4096}, Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 4096}, false},
		{"c4k-backing", CreateOptions{ClusterSize: 4096}, Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 4096}, true},
		{"c512-rb64", CreateOptions{ClusterSize: 512, RefcountBits: 64}, Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 512}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runCrash(t, tc.co, tc.o, tc.backing, points)
		})
	}
}
