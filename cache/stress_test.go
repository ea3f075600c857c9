package cache

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCache_Stress runs goroutines doing random Get/modify/MarkDirty/Put,
// GetEmpty, Discard, Write and Flush against two caches (l2 depending on
// refcount) with a 2-table capacity, checks every table read against a flat
// model, then flushes and compares the device with the model.
func TestCache_Stress(t *testing.T) {
	seed := testkit.Seed(t)
	const (
		nTables    = 24
		workers    = 8
		opsPerWork = 4000
		ts         = 1024
		refBase    = 1 << 20
	)
	d := newRecDev()
	l2 := newCache(t, d, Config{Name: "l2", TableSize: ts, MaxBytes: 2 * ts})
	ref := newCache(t, d, Config{Name: "refcount", TableSize: ts, MaxBytes: 2 * ts})

	type slot struct {
		mu    sync.Mutex // the engine's lock for this table
		c     *Cache
		off   int64
		model []byte
	}
	slots := make([]*slot, 2*nTables)
	for i := range slots {
		s := &slot{c: l2, off: int64(i) * ts, model: make([]byte, ts)}
		if i >= nTables {
			s.c, s.off = ref, refBase+int64(i-nTables)*ts
		}
		slots[i] = s
	}
	var depMu sync.Mutex // SetDependency calls are serialised by the engine

	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			fail := func(err error) { errc <- err }
			// lockGet locks s and pins its table; on an error it unlocks
			// s and reports the error.
			lockGet := func(s *slot) (*Table, bool) {
				s.mu.Lock()
				tb, err := s.c.Get(s.off)
				if err != nil {
					s.mu.Unlock()
					fail(err)
					return nil, false
				}
				return tb, true
			}
			// rewrite changes s's pinned table tb with fill under the
			// table's lock, copies it to the model, then marks it dirty,
			// unpins it and unlocks s.
			rewrite := func(s *slot, tb *Table, fill func(data []byte)) {
				tb.Lock()
				fill(tb.Data)
				copy(s.model, tb.Data)
				tb.Unlock()
				s.c.MarkDirty(tb)
				s.c.Put(tb)
				s.mu.Unlock()
			}
			for range opsPerWork {
				s := slots[rng.IntN(len(slots))]
				switch p := rng.IntN(100); {
				case p < 60: // modify some 8-byte entries
					tb, ok := lockGet(s)
					if !ok {
						return
					}
					if !bytes.Equal(tb.Data, s.model) {
						s.mu.Unlock()
						t.Errorf("table 0x%x (%s): cached contents differ from model", s.off, s.c.Name())
						return
					}
					if s.c == l2 && rng.IntN(4) == 0 {
						depMu.Lock()
						err := l2.SetDependency(ref)
						depMu.Unlock()
						if err != nil {
							s.mu.Unlock()
							fail(err)
							return
						}
					}
					rewrite(s, tb, func(data []byte) {
						for range 1 + rng.IntN(4) {
							e := rng.IntN(ts / 8)
							binary.BigEndian.PutUint64(data[e*8:], rng.Uint64())
						}
					})
				case p < 75: // read only
					tb, ok := lockGet(s)
					if !ok {
						return
					}
					if !bytes.Equal(tb.Data, s.model) {
						t.Errorf("table 0x%x (%s): cached contents differ from model", s.off, s.c.Name())
					}
					s.c.Put(tb)
					s.mu.Unlock()
				case p < 82: // freed and reallocated: Discard, GetEmpty, fill
					s.mu.Lock()
					s.c.Discard(s.off)
					tb, err := s.c.GetEmpty(s.off)
					if err != nil {
						s.mu.Unlock()
						fail(err)
						return
					}
					rewrite(s, tb, func(data []byte) {
						for i := range data {
							data[i] = byte(rng.Uint32())
						}
					})
				case p < 88:
					if s.c == l2 && rng.IntN(2) == 0 {
						l2.DependsOnFlush()
					}
					if err := s.c.Write(); err != nil {
						fail(err)
						return
					}
				case p < 91:
					if err := s.c.Flush(); err != nil {
						fail(err)
						return
					}
				default: // hold a pin across other work
					tb, ok := lockGet(s)
					if !ok {
						return
					}
					o := slots[rng.IntN(len(slots))]
					if o != s && o.mu.TryLock() {
						tb2, err := o.c.Get(o.off)
						if err == nil {
							if !bytes.Equal(tb2.Data, o.model) {
								t.Errorf("table 0x%x: cached contents differ from model", o.off)
							}
							o.c.Put(tb2)
						}
						o.mu.Unlock()
						if err != nil {
							s.c.Put(tb)
							s.mu.Unlock()
							fail(err)
							return
						}
					}
					s.c.Put(tb)
					s.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := l2.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ref.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if got := devBytes(t, d, s.off, ts); !bytes.Equal(got, s.model) {
			t.Fatalf("device table 0x%x (%s) differs from model", s.off, s.c.Name())
		}
	}
	for _, c := range []*Cache{l2, ref} {
		m := c.Metrics()
		t.Logf("%s: %v", c.Name(), m)
		if m.PinnedTables != 0 || m.DirtyTables != 0 {
			t.Errorf("%s: leftover pins or dirty tables: %v", c.Name(), m)
		}
	}
}
