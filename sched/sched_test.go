package sched

import (
	"github.com/qring/qring/internal/testkit"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClusterLocks_TryAcquire(t *testing.T) {
	type span struct{ first, count uint64 }
	cases := []struct {
		name     string
		held     []span
		try      span
		conflict bool
		at       uint64
	}{
		{"empty", nil, span{0, 1}, false, 0},
		{"same cluster", []span{{5, 1}}, span{5, 1}, true, 5},
		{"adjacent below", []span{{5, 1}}, span{4, 1}, false, 0},
		{"adjacent above", []span{{5, 1}}, span{6, 4}, false, 0},
		{"overlap later", []span{{10, 2}}, span{8, 4}, true, 10},
		{"overlap start", []span{{6, 10}}, span{8, 4}, true, 8},
		{"first of two", []span{{20, 1}, {12, 1}}, span{10, 16}, true, 12},
		{"across shard groups", []span{{15, 2}}, span{16, 1}, true, 16},
		{"far shard alias", []span{{3, 1}}, span{3 + 64<<groupShift, 1}, false, 0}, // same shard, other group
		{"huge range", []span{{1 << 30, 1}}, span{0, 1 << 31}, true, 1 << 30},
		{"count zero is one", []span{{7, 1}}, span{7, 0}, true, 7},
		{"end clamp", []span{{^uint64(0) - 5, 1}}, span{^uint64(0) - 10, 100}, true, ^uint64(0) - 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c ClusterLocks[int]
			var held []*Alloc[int]
			for _, h := range tc.held {
				a, _, b := c.TryAcquire(h.first, h.count)
				if a == nil || b != nil {
					t.Fatalf("setup TryAcquire%v failed", h)
				}
				held = append(held, a)
			}
			cb, cat := c.Conflict(tc.try.first, tc.try.count)
			a, at, b := c.TryAcquire(tc.try.first, tc.try.count)
			if !tc.conflict {
				if a == nil || b != nil || cb != nil {
					t.Fatalf("TryAcquire%v: a=%v blocker=%v conflict=%v, want acquired", tc.try, a, b, cb)
				}
				// The new one now blocks an identical request (S1).
				if a2, _, b2 := c.TryAcquire(tc.try.first, tc.try.count); a2 != nil || b2 != a {
					t.Fatalf("second TryAcquire not blocked by first")
				} else {
					b2.Forget()
				}
				c.Release(a)
			} else {
				if a != nil || b == nil || at != tc.at || cb != b || cat != tc.at {
					t.Fatalf("TryAcquire%v: a=%v at=%d blocker=%v conflict=%v@%d, want blocker at %d",
						tc.try, a, at, b, cb, cat, tc.at)
				}
				cb.Forget()
				done := make(chan struct{})
				go func() { b.Wait(); close(done) }()
				for _, h := range held {
					c.Release(h)
				}
				held = nil
				<-done
			}
			for _, h := range held {
				c.Release(h)
			}
			if m := c.Metrics(); m.InFlight != 0 {
				t.Fatalf("metrics %v", m)
			}
			if b, _ := c.Conflict(0, 1<<62); b != nil {
				t.Fatal("allocation left registered")
			}
		})
	}
}

// TestClusterLocks_WaitAfterRecycle: a blocker released and the ClusterLocks
// reused heavily before Wait is called still returns at once (S5).
func TestClusterLocks_WaitAfterRecycle(t *testing.T) {
	var c ClusterLocks[int]
	a, _, _ := c.TryAcquire(1, 1)
	_, _, b := c.TryAcquire(1, 1)
	c.Release(a)
	for range 100 {
		x, _, _ := c.TryAcquire(1, 1)
		c.Release(x)
	}
	held, _, _ := c.TryAcquire(1, 1) // may or may not be the same object as a
	if !testkit.Within(5*time.Second, b.Wait) {
		t.Fatal("Wait on a released blocker blocked on a later incarnation")
	}
	c.Release(held)
	defer func() {
		if recover() == nil {
			t.Fatal("double Wait did not panic")
		}
	}()
	b2 := b
	_, _, _ = c.TryAcquire(100, 1) // make sure b is not in flight
	b2.Wait()
}

// TestClusterLocks_Stress checks S1 and that waiters wake, with random
// ranges from many goroutines.
func TestClusterLocks_Stress(t *testing.T) {
	seed := testkit.Seed(t)
	const clusters = 256
	iters := 3000
	if testing.Short() {
		iters = 300
	}
	var c ClusterLocks[int]
	var owners [clusters]atomic.Int32
	var violations atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for range iters {
				first := uint64(rng.IntN(clusters))
				count := 1 + uint64(rng.IntN(min(40, clusters-int(first))))
				if rng.IntN(4) == 0 {
					if b, at := c.Conflict(first, count); b != nil {
						if at < first || at >= first+count {
							violations.Add(1)
						}
						b.Forget()
					}
				}
				a, at, b := c.TryAcquire(first, count)
				if b != nil {
					if at < first || at >= first+count {
						violations.Add(1)
					}
					b.Wait()
					continue
				}
				for i := first; i < first+count; i++ {
					if owners[i].Add(1) != 1 {
						violations.Add(1)
					}
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Microsecond)
				}
				for i := first; i < first+count; i++ {
					owners[i].Add(-1)
				}
				c.Release(a)
			}
		})
	}
	if !testkit.Within(60*time.Second, wg.Wait) {
		t.Fatal("stress did not finish")
	}
	t.Logf("%v", c.Metrics())
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d S1 violations", v)
	}
	if m := c.Metrics(); m.InFlight != 0 {
		t.Fatalf("metrics %v", m)
	}
}

func TestClusterLocks_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	var c ClusterLocks[int]
	held, _, _ := c.TryAcquire(1000, 1) // something in flight elsewhere
	defer c.Release(held)
	state := 1
	cases := []struct {
		name string
		fn   func()
	}{
		{"TryAcquire/Release", func() {
			a, _, _ := c.TryAcquire(16, 1)
			c.Release(a)
		}},
		{"with state", func() {
			a, _, _ := c.TryAcquire(16, 1)
			a.SetState(&state)
			c.Release(a)
		}},
		{"Conflict miss", func() { c.Conflict(16, 16) }},
		{"blocked Forget", func() {
			_, _, b := c.TryAcquire(1000, 1)
			b.Forget()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.fn); n != 0 {
				t.Fatalf("%v allocations per run (S6)", n)
			}
		})
	}
}

// TestClusterLocks_State: a blocker returns the state its owner attached
// (S7), before and after the owner releases it, and a recycled Alloc
// starts without one (S5).
func TestClusterLocks_State(t *testing.T) {
	var c ClusterLocks[string]
	a, _, _ := c.TryAcquire(3, 1)
	_, _, early := c.TryAcquire(3, 1)
	if st := early.State(); st != nil {
		t.Fatalf("state %q before SetState", *st)
	}
	st := "allocating"
	a.SetState(&st)
	b, _ := c.Conflict(3, 1)
	if b != a || b.State() != &st || early.State() != &st {
		t.Fatal("a blocker does not return its owner's state")
	}
	c.Release(a)
	if b.State() != &st {
		t.Fatal("a pinned blocker lost its state at Release")
	}
	b.Forget()
	early.Wait()
	for range 100 { // the pool hands the Alloc out again, or a new one
		x, _, _ := c.TryAcquire(3, 1)
		if x.State() != nil {
			t.Fatal("a recycled Alloc kept its previous owner's state")
		}
		c.Release(x)
	}
}

func TestMetrics_String(t *testing.T) {
	cm := ClusterMetrics{Acquisitions: 3, Conflicts: 2, Waits: 1, Checks: 7, InFlight: 1, PeakInFlight: 2}
	if got, want := cm.String(), "acquisitions 3  conflicts 2  waits 1  checks 7  in-flight 1 (peak 2)"; got != want {
		t.Errorf("ClusterMetrics.String() = %q, want %q", got, want)
	}
}
