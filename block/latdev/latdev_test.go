package latdev

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
)

type recorder struct {
	mu    sync.Mutex
	costs []time.Duration
}

func (r *recorder) sleep(d time.Duration) {
	r.mu.Lock()
	r.costs = append(r.costs, d)
	r.mu.Unlock()
}

func (r *recorder) take() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.costs
	r.costs = nil
	return c
}

// TestDev_Cost walks one device through a sequence of ops and checks the
// cost of each against the formula in the package doc.
func TestDev_Cost(t *testing.T) {
	rec := &recorder{}
	m := Model{
		PerOp: 10, SeekMin: 100, SeekTime: 1000, SeekDistance: 1000, SeekMax: 500,
		Bandwidth:        1_000_000_000, // 1 byte per ns
		AllocGranularity: 4096, AllocWrite: 7000, AllocZero: 3000, Flush: 50,
		Parallel: 1, Sleep: rec.sleep,
	}
	d := New(memdev.New(memdev.Options{}), m)
	buf := make([]byte, 8192)
	steps := []struct {
		name string
		do   func() error
		want time.Duration
	}{
		{"first write allocates", func() error { return block.WriteAt(d, buf[:4096], 0) }, 10 + 4096 + 7000},
		{"sequential write allocates", func() error { return block.WriteAt(d, buf[:4096], 4096) }, 10 + 4096 + 7000},
		{"read seeks back, capped", func() error { return block.ReadAt(d, buf[:4096], 0) }, 10 + 500 + 4096},
		{"zero two new extents", func() error { return d.WriteZeroes(8192, 8192, block.Allocate) }, 10 + 500 + 2*3000},
		{"write into zeroed space", func() error { return block.WriteAt(d, buf[:100], 8192) }, 10 + 500 + 100},
		{"flush", d.Flush, 10 + 50},
		{"sequential read", func() error { return block.ReadAt(d, buf[:10], 8292) }, 10 + 10},
		{"truncate", func() error { return d.Truncate(4096) }, 10},
		{"regrown extent is new", func() error { return block.WriteAt(d, buf[:1], 4096) }, 10 + 500 + 1 + 7000},
		{"short seek scales", func() error { return block.WriteAt(d, buf[:1], 4107) }, 10 + (100 + 10) + 1},
		{"read never allocates", func() error { return block.ReadAt(d, buf[:1], 1<<20) }, 10 + 500 + 1},
	}
	var total time.Duration
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := rec.take()
		if len(got) != 1 || got[0] != s.want {
			t.Errorf("%s: slept %v, want [%v]", s.name, got, s.want)
		}
		total += s.want
	}
	st := d.Stats()
	if st.Ops != int64(len(steps)) || st.Modelled != total || st.NewExtents != 5 || st.Seeks != 6 {
		t.Errorf("stats %+v, want ops %d modelled %v extents 5 seeks 6", st, len(steps), total)
	}
}

func TestDev_Parallel(t *testing.T) {
	cases := []struct {
		name     string
		parallel int
		max      int32
	}{{"single head", 1, 1}, {"four", 4, 4}, {"unlimited", 0, 8}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cur, peak atomic.Int32
			m := Model{PerOp: time.Millisecond, Parallel: tc.parallel, Sleep: func(d time.Duration) {
				n := cur.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(d)
				cur.Add(-1)
			}}
			d := New(memdev.New(memdev.Options{}), m)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 3 {
						block.WriteAt(d, make([]byte, 512), int64(g*3+i)*512)
					}
				})
			}
			wg.Wait()
			if p := peak.Load(); p > tc.max || (tc.max > 1 && p < 2) {
				t.Fatalf("peak concurrency %d, limit %d", p, tc.max)
			}
		})
	}
}

func TestPresets(t *testing.T) {
	cases := []struct {
		name string
		m    Model
	}{{"HDD", HDD()}, {"Distributed", Distributed()}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.m.Scaled(0.001)
			if s.PerOp != tc.m.PerOp/1000 || (tc.m.Bandwidth > 0 && s.Bandwidth != tc.m.Bandwidth*1000) {
				t.Fatalf("Scaled: %+v", s)
			}
			d := New(memdev.New(memdev.Options{}), s)
			buf := make([]byte, 4096)
			start := time.Now()
			for i := range 16 {
				if err := block.WriteAt(d, buf, int64(i)*(256<<10)); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			st := d.Stats()
			t.Logf("%s scaled x0.001: %+v in %v", tc.name, st, time.Since(start))
			if st.Modelled <= 0 || time.Since(start) < st.Modelled {
				t.Fatalf("modelled %v, elapsed %v", st.Modelled, time.Since(start))
			}
		})
	}
	// Shape checks on the unscaled presets.
	if h := HDD(); h.Parallel != 1 || h.Bandwidth != 150_000_000 {
		t.Error("HDD preset")
	}
	if ds := Distributed(); ds.Parallel < 16 || ds.AllocWrite <= 0 || ds.AllocZero <= 0 {
		t.Error("Distributed preset")
	}
}

// TestDev_Media: the model's medium replaces the child's; only the HDD
// preset is a particular medium.
func TestDev_Media(t *testing.T) {
	ram := memdev.New(memdev.Options{Media: block.MediaRAM, Align: 512})
	for _, tc := range []struct {
		name string
		m    Model
		want block.Media
	}{{"HDD", HDD(), block.MediaHDD}, {"Distributed", Distributed(), block.MediaUnknown}, {"zero", Model{}, block.MediaUnknown}} {
		c := New(ram, tc.m).Caps()
		if c.Media != tc.want || c.Align != 512 {
			t.Errorf("%s: Caps %+v, want Media %v and the child's Align", tc.name, c, tc.want)
		}
	}
}

func TestDev_ZeroThenWritev(t *testing.T) {
	for _, child := range []struct {
		name string
		dev  block.Device
	}{
		{"plain child", memdev.New(memdev.Options{})},
		{"ZeroWriter child", errordev.New(memdev.New(memdev.Options{}), nil, errordev.Options{})},
	} {
		t.Run(child.name, func(t *testing.T) {
			rec := &recorder{}
			d := New(child.dev, Model{PerOp: 1, AllocGranularity: 4096, AllocZero: 100, AllocWrite: 1000, Parallel: 1, Sleep: rec.sleep})
			if err := d.ZeroThenWritev(0, 8192, 0, 4096, [][]byte{make([]byte, 512)}); err != nil {
				t.Fatal(err)
			}
			// zero: PerOp + 2 new extents × AllocZero; write: PerOp only, as
			// its extent was just allocated by the zero.
			got := rec.take()
			if len(got) != 2 || got[0]+got[1] != 1+200+1 {
				t.Fatalf("costs %v", got)
			}
			if d.Caps() != child.dev.Caps() || d.Unwrap() != child.dev {
				t.Fatal("pass-through")
			}
		})
	}
}
