package sched

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// blocks reports whether Begin(b) would wait while a is in flight.
func TestTracker_Begin_Overlap(t *testing.T) {
	type rng struct {
		off, n int64
		ser    bool
	}
	cases := []struct {
		name   string
		a, b   rng
		blocks bool
	}{
		{"plain/plain overlap", rng{0, 100, false}, rng{50, 100, false}, false},
		{"ser/plain overlap", rng{0, 100, true}, rng{50, 100, false}, true},
		{"plain/ser overlap", rng{0, 100, false}, rng{50, 100, true}, true},
		{"ser/ser overlap", rng{0, 100, true}, rng{99, 1, true}, true},
		{"ser/ser adjacent", rng{0, 100, true}, rng{100, 100, true}, false},
		{"ser/ser adjacent before", rng{100, 100, true}, rng{0, 100, true}, false},
		{"ser/ser contained", rng{0, 1000, true}, rng{10, 10, true}, true},
		{"ser/ser containing", rng{10, 10, true}, rng{0, 1000, true}, true},
		{"ser zero length", rng{0, 100, true}, rng{50, 0, true}, false},
		{"ser to infinity", rng{4096, 1<<63 - 1 - 4096, true}, rng{1 << 40, 4096, false}, true},
		{"ser/plain disjoint", rng{0, 4096, true}, rng{8192, 4096, false}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var tr Tracker
			a, err := tr.Begin(tc.a.off, tc.a.n, tc.a.ser, false)
			if err != nil {
				t.Fatal(err)
			}
			// NoWait answers the question without blocking (S3).
			b, err := tr.Begin(tc.b.off, tc.b.n, tc.b.ser, true)
			if tc.blocks {
				if !errors.Is(err, block.ErrBusy) || !errors.Is(err, ErrBusy) {
					t.Fatalf("noWait Begin: err %v, want ErrBusy", err)
				}
				if got := tr.Metrics().InFlight; got != 1 {
					t.Fatalf("busy Begin registered: in-flight %d", got)
				}
				// Without noWait it must wait until a ends.
				done := make(chan *Req)
				go func() {
					r, err := tr.Begin(tc.b.off, tc.b.n, tc.b.ser, false)
					if err != nil {
						t.Error(err)
					}
					done <- r
				}()
				select {
				case <-done:
					t.Fatal("Begin did not wait for a conflicting request")
				case <-time.After(20 * time.Millisecond):
				}
				tr.End(a)
				select {
				case r := <-done:
					tr.End(r)
				case <-time.After(5 * time.Second):
					t.Fatal("Begin not woken by End")
				}
				if m := tr.Metrics(); m.Waits != 1 || m.Busy != 1 || m.InFlight != 0 {
					t.Fatalf("metrics %v", m)
				}
				return
			}
			if err != nil {
				t.Fatalf("non-conflicting noWait Begin: %v", err)
			}
			tr.End(b)
			tr.End(a)
			if m := tr.Metrics(); m.Waits != 0 || m.Busy != 0 || m.InFlight != 0 || m.PeakInFlight != 2 {
				t.Fatalf("metrics %v", m)
			}
		})
	}
}

func TestTracker_Begin_Range(t *testing.T) {
	var tr Tracker
	for _, c := range [][2]int64{{-1, 1}, {0, -1}, {1 << 62, 1 << 62}} {
		if _, err := tr.Begin(c[0], c[1], true, false); !errors.Is(err, block.ErrRange) {
			t.Errorf("Begin(%d, %d): %v, want ErrRange", c[0], c[1], err)
		}
	}
}

// TestTracker_Stress checks S2 with atomic per-unit counters while many
// goroutines Begin/End random ranges, some serialising, some NoWait.
func TestTracker_Stress(t *testing.T) {
	seed := testkit.Seed(t)
	const (
		units      = 64
		unit       = 512
		goroutines = 32
	)
	iters := 2000
	if testing.Short() {
		iters = 200
	}
	var tr Tracker
	var anyN, serN [units]atomic.Int32
	var violations, busy atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for range iters {
				u0 := rng.IntN(units)
				nu := 1 + rng.IntN(min(8, units-u0))
				ser := rng.IntN(4) == 0
				noWait := ser && rng.IntN(3) == 0
				r, err := tr.Begin(int64(u0*unit), int64(nu*unit), ser, noWait)
				if err != nil {
					if !errors.Is(err, block.ErrBusy) {
						t.Errorf("Begin: %v", err)
					}
					busy.Add(1)
					continue
				}
				// Add then check, in opposite orders for the two kinds, so
				// that of two overlapping runners at least one sees the other.
				for u := u0; u < u0+nu; u++ {
					if ser {
						serN[u].Add(1)
						if anyN[u].Add(1) != 1 {
							violations.Add(1)
						}
					} else {
						anyN[u].Add(1)
						if serN[u].Load() != 0 {
							violations.Add(1)
						}
					}
				}
				if rng.IntN(8) == 0 {
					time.Sleep(time.Microsecond)
				}
				for u := u0; u < u0+nu; u++ {
					anyN[u].Add(-1)
					if ser {
						serN[u].Add(-1)
					}
				}
				tr.End(r)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("deadlock: stress did not finish (S4)")
	}
	m := tr.Metrics()
	t.Logf("%v", m)
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d S2 violations", v)
	}
	if m.InFlight != 0 || m.Busy != busy.Load() {
		t.Fatalf("metrics %v, busy seen %d", m, busy.Load())
	}
}

// TestTracker_NoDeadlock: many serialising requests on one range, which
// register and then wait for each other, all finish (S4).
func TestTracker_NoDeadlock(t *testing.T) {
	var tr Tracker
	var wg sync.WaitGroup
	var inside atomic.Int32
	var bad atomic.Bool
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r, err := tr.Begin(int64((g+i)%3*100), 250, true, false)
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) > 2 { // three windows overlap pairwise except 0 and 200
					bad.Store(true)
				}
				inside.Add(-1)
				tr.End(r)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("deadlock")
	}
	if bad.Load() {
		t.Fatal("more serialising requests ran at once than can be disjoint")
	}
}

func TestTracker_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	var tr Tracker
	held, _ := tr.Begin(1<<20, 4096, true, false) // a serialising neighbour forces the scan
	defer tr.End(held)
	cases := []struct {
		name string
		ser  bool
	}{{"plain", false}, {"serialising", true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := testing.AllocsPerRun(1000, func() {
				r, err := tr.Begin(0, 4096, tc.ser, true)
				if err != nil {
					t.Fatal(err)
				}
				tr.End(r)
			})
			if n != 0 {
				t.Fatalf("fast path allocates %v per Begin/End (S6)", n)
			}
		})
	}
}

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
			var c ClusterLocks
			var held []*Alloc
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
	var c ClusterLocks
	a, _, _ := c.TryAcquire(1, 1)
	_, _, b := c.TryAcquire(1, 1)
	c.Release(a)
	for range 100 {
		x, _, _ := c.TryAcquire(1, 1)
		c.Release(x)
	}
	held, _, _ := c.TryAcquire(1, 1) // may or may not be the same object as a
	done := make(chan struct{})
	go func() { b.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
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
	var c ClusterLocks
	var owners [clusters]atomic.Int32
	var violations atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
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
	var c ClusterLocks
	held, _, _ := c.TryAcquire(1000, 1) // something in flight elsewhere
	defer c.Release(held)
	cases := []struct {
		name string
		fn   func()
	}{
		{"TryAcquire/Release", func() {
			a, _, _ := c.TryAcquire(16, 1)
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

func TestMetrics_String(t *testing.T) {
	tm := TrackerMetrics{Begins: 5, Serialising: 2, Waits: 1, WaitRounds: 3, Busy: 1, InFlight: 0, PeakInFlight: 4}
	if got, want := tm.String(), "begins 5 (serialising 2)  waits 1 (rounds 3)  busy 1  in-flight 0 (peak 4)"; got != want {
		t.Errorf("TrackerMetrics.String() = %q, want %q", got, want)
	}
	if d := tm.Sub(TrackerMetrics{Begins: 1}); d.Begins != 4 || d.PeakInFlight != 4 {
		t.Errorf("Sub: %v", d)
	}
	cm := ClusterMetrics{Acquisitions: 3, Conflicts: 2, Waits: 1, Checks: 7, InFlight: 1, PeakInFlight: 2}
	if got, want := cm.String(), "acquisitions 3  conflicts 2  waits 1  checks 7  in-flight 1 (peak 2)"; got != want {
		t.Errorf("ClusterMetrics.String() = %q, want %q", got, want)
	}
}

func TestTracker_MakeSerialising(t *testing.T) {
	var tr Tracker
	w, _ := tr.Begin(1<<20, 4096, false, false) // an in-flight write past "EOF"
	z, _ := tr.Begin(0, 4096, false, false)     // the zero write near EOF
	done := make(chan struct{})
	go func() {
		if err := tr.MakeSerialising(z, 0, 1<<62); err != nil {
			t.Error(err)
		}
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("MakeSerialising did not wait for an overlapping write")
	case <-time.After(20 * time.Millisecond):
	}
	tr.End(w)
	<-done
	if _, err := tr.Begin(1<<30, 1, false, true); !errors.Is(err, block.ErrBusy) {
		t.Fatalf("write inside the widened range: %v, want ErrBusy", err)
	}
	tr.End(z)
	if m := tr.Metrics(); m.InFlight != 0 || m.Serialising != 1 || m.Waits != 1 {
		t.Fatalf("metrics %v", m)
	}
}
