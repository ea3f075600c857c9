package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// The ordering stress test's layout: nL2 "L2" tables, nRef "refcount"
// tables and nData data blocks, each tableSize bytes, in three regions.
//
// An L2 table's word 0 is its removal generation (bumped by every unlink);
// words 1.. are entries kind<<62 | idx<<32 | ver: a link to refcount table
// idx at version ver (kind 1) or to data block idx at version ver (kind 2).
// A refcount table's word 0 is its version; word 1+s is the removal
// generation of L2 table s it has seen. A data block's word 0 is its
// version.
//
// Every link is made as the engine makes it: the target first (the
// refcount table bumped and dirtied, or the data block written), then the
// dependency (SetDependency on the refcount cache, or DependsOnFlush),
// then the entry. Every unlink: the entry removed and the generation
// bumped, then the refcount cache depends on the L2 cache, then the
// refcount table records the generation. So whenever a table reaches the
// device, what it names must be durable already: ordDev checks that at
// every write, against the flushed state of the device.
//
// An unlink may instead free the L2 table and rebuild it (Discard, then
// GetEmpty): the engine frees a table only once the L1 entry naming it is
// gone and durable (qcow2's Q3), which makes every removal the dropped
// copy held moot. So the removals of a table up to its last rebuild need
// not be durable in the table itself (ordDev.freed); the rebuilt table's
// own removal must be, as any other.
const (
	ordTS       = 512
	ordNL2      = 10
	ordNRef     = 5
	ordNData    = 8
	ordRefBase  = 1 << 20
	ordDataBase = 2 << 20
	ordKindRef  = 1
	ordKindData = 2
)

func ordEntry(kind, idx int, ver uint64) uint64 {
	return uint64(kind)<<62 | uint64(idx)<<32 | ver
}

func ordDecode(e uint64) (kind, idx int, ver uint64) {
	return int(e >> 62), int(e >> 32 & (1<<30 - 1)), e & (1<<32 - 1)
}

func ordWord(b []byte, i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }

func ordPut(b []byte, i int, v uint64) { binary.BigEndian.PutUint64(b[8*i:], v) }

var errInjected = errors.New("injected I/O error")

// ordDev is a memdev that checks the ordering rule above at every write
// and fails reads, writes and flushes at random while failing is on.
type ordDev struct {
	*memdev.Dev
	t       *testing.T
	failing atomic.Bool
	rngMu   sync.Mutex
	rng     *rand.Rand
	checked atomic.Int64
	failed  atomic.Int64
	// freed[s] is the last removal generation of L2 table s that a
	// rebuild made moot (its parent's removal is durable first, Q3).
	freed [ordNL2]atomic.Uint64
}

func (d *ordDev) fail(permille int) bool {
	if !d.failing.Load() {
		return false
	}
	d.rngMu.Lock()
	defer d.rngMu.Unlock()
	if d.rng.IntN(1000) < permille {
		d.failed.Add(1)
		return true
	}
	return false
}

func (d *ordDev) Readv(off int64, bufs [][]byte) error {
	if d.fail(5) {
		return errInjected
	}
	return d.Dev.Readv(off, bufs)
}

func (d *ordDev) Flush() error {
	if d.fail(30) {
		return errInjected
	}
	return d.Dev.Flush()
}

func (d *ordDev) Writev(off int64, bufs [][]byte) error {
	if d.fail(30) {
		return errInjected
	}
	if off < ordDataBase {
		d.checkOrder(off, bufs)
	}
	err := d.Dev.Writev(off, bufs)
	if err == nil && d.fail(10) {
		// Landed, and reported failed (mayHaveLanded): the cache must
		// write it again.
		return errInjected
	}
	return err
}

// checkOrder fails the test if a table about to be written names
// something the flushed state of the device does not hold yet.
func (d *ordDev) checkOrder(off int64, bufs [][]byte) {
	d.checked.Add(1)
	durable := d.Dev.CrashClone(rand.New(rand.NewPCG(1, 2)), 0) // flushed state only
	word0 := func(base int64, i int) uint64 {
		b := make([]byte, 8)
		if err := block.ReadAt(durable, b, base+int64(i)*ordTS); err != nil {
			d.t.Error(err)
		}
		return binary.BigEndian.Uint64(b)
	}
	for k, b := range bufs {
		o := off + int64(k*ordTS)
		switch {
		case o < ordRefBase: // an L2 table: its links
			for i := 1; i < ordTS/8; i++ {
				e := ordWord(b, i)
				if e == 0 {
					continue
				}
				kind, idx, ver := ordDecode(e)
				base := int64(ordRefBase)
				if kind == ordKindData {
					base = ordDataBase
				}
				if got := word0(base, idx); got < ver {
					d.t.Errorf("L2 table 0x%x written with entry %d naming %s %d version %d; durable version %d",
						o, i, map[int]string{ordKindRef: "refcount table", ordKindData: "data block"}[kind], idx, ver, got)
				}
			}
		default: // a refcount table: the removals it counts
			for s := range ordNL2 {
				want := ordWord(b, 1+s)
				if want <= d.freed[s].Load() {
					continue // moot: the table holding it was freed
				}
				if got := word0(0, s); got < want {
					d.t.Errorf("refcount table 0x%x written counting removal %d of L2 table %d; durable generation %d", o, want, s, got)
				}
			}
		}
	}
}

// TestCache_StressOrdering runs engine-like mutations (under one lock, as
// qcow2's mu), lock-free readers (Get and Peek under the table lock),
// Write/Flush callers, discards, a 1 ms cleaner and injected I/O
// failures against two 2-table caches depending on each other in turn,
// and checks at every device write that the dependency order held (C5),
// at every locked read that no stale copy is served (C1-C4), and at the
// end, with failures off, that the device matches the model.
func TestCache_StressOrdering(t *testing.T) {
	seed := testkit.Seed(t)
	workers, ops := 6, 3000
	if testing.Short() || raceEnabled {
		workers, ops = 4, 1000
	}
	if raceEnabled {
		ops = 400
	}
	d := &ordDev{Dev: memdev.New(memdev.Options{}), t: t, rng: rand.New(rand.NewPCG(seed, 99))}
	// Zero the regions so every load succeeds (memdev reads past its end
	// as an error).
	if err := d.Dev.WriteZeroes(0, ordDataBase+ordNData*ordTS, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Dev.Flush(); err != nil {
		t.Fatal(err)
	}
	l2 := newCache(t, d, Config{Name: "l2", TableSize: ordTS, MaxBytes: 2 * ordTS, CleanInterval: time.Millisecond})
	ref := newCache(t, d, Config{Name: "refcount", TableSize: ordTS, MaxBytes: 2 * ordTS, CleanInterval: time.Millisecond})

	// The model, under engMu (the engine's lock); versions also atomic for
	// the lock-free readers.
	var engMu sync.Mutex
	l2Model := make([][]byte, ordNL2)
	refModel := make([][]byte, ordNRef)
	for i := range l2Model {
		l2Model[i] = make([]byte, ordTS)
	}
	for i := range refModel {
		refModel[i] = make([]byte, ordTS)
	}
	var refVer [ordNRef]atomic.Uint64
	var dataVer [ordNData]atomic.Uint64
	var l2Gen [ordNL2]atomic.Uint64
	l2Off := func(s int) int64 { return int64(s) * ordTS }
	refOff := func(r int) int64 { return ordRefBase + int64(r)*ordTS }

	// getModel gets c's table at off under engMu and checks it against
	// the model (no stale copy served, whatever failed before).
	getModel := func(c *Cache, off int64, model []byte) (*Table, bool) {
		tb, err := c.Get(off)
		if err != nil {
			return nil, false
		}
		tb.Lock()
		same := bytes.Equal(tb.Data, model)
		tb.Unlock()
		if !same {
			t.Errorf("%s table 0x%x: cached contents differ from the model", c.Name(), off)
			c.Put(tb)
			return nil, false
		}
		return tb, true
	}
	// update changes tb and its model copy under the table lock, then
	// marks it dirty and puts it.
	update := func(c *Cache, tb *Table, model []byte, fn func(b []byte)) {
		tb.Lock()
		fn(tb.Data)
		copy(model, tb.Data)
		tb.Unlock()
		c.MarkDirty(tb)
		c.Put(tb)
	}
	bumpRef := func(r int) (uint64, bool) {
		tb, ok := getModel(ref, refOff(r), refModel[r])
		if !ok {
			return 0, false
		}
		v := refVer[r].Load() + 1
		update(ref, tb, refModel[r], func(b []byte) { ordPut(b, 0, v) })
		refVer[r].Store(v)
		return v, true
	}
	link := func(rng *rand.Rand) {
		s, i := rng.IntN(ordNL2), 1+rng.IntN(ordTS/8-1)
		var e uint64
		if rng.IntN(3) == 0 { // a data block, then a flush dependency (Q2)
			k := rng.IntN(ordNData)
			v := dataVer[k].Load() + 1
			b := block.AlignedBuf(ordTS, 0)
			ordPut(b, 0, v)
			if err := d.Writev(ordDataBase+int64(k)*ordTS, [][]byte{b}); err != nil {
				return // the target may or may not have landed: do not link it
			}
			dataVer[k].Store(v)
			l2.DependsOnFlush()
			e = ordEntry(ordKindData, k, v)
		} else { // a refcount increment, then the cache dependency (Q1)
			r := rng.IntN(ordNRef)
			v, ok := bumpRef(r)
			if !ok {
				return
			}
			if err := l2.SetDependency(ref); err != nil {
				return
			}
			e = ordEntry(ordKindRef, r, v)
		}
		tb, ok := getModel(l2, l2Off(s), l2Model[s])
		if !ok {
			return
		}
		update(l2, tb, l2Model[s], func(b []byte) { ordPut(b, i, e) })
	}
	unlink := func(rng *rand.Rand) {
		s := rng.IntN(ordNL2)
		g := l2Gen[s].Load() + 1
		l2Gen[s].Store(g) // before any reader can see it
		if rng.IntN(4) == 0 {
			// Freed and reallocated: dropped (dirty or not) and rebuilt
			// from zeros, keeping only the generation. The removals the
			// dropped copy held are moot from here (ordDev.freed).
			d.freed[s].Store(g - 1)
			l2.Discard(l2Off(s))
			// The engine rebuilds a freed table before anything reads it
			// (a GetEmpty that fails, when its C6 write-back does, leaves
			// nothing to read): try again until the rebuild is in.
			var tb *Table
			for try := 0; tb == nil; try++ {
				var err error
				if tb, err = l2.GetEmpty(l2Off(s)); err != nil && try == 1000 {
					t.Errorf("rebuilding L2 table %d: %v", s, err)
					return
				}
			}
			update(l2, tb, l2Model[s], func(b []byte) {
				clear(b)
				ordPut(b, 0, g)
			})
		} else {
			tb, ok := getModel(l2, l2Off(s), l2Model[s])
			if !ok {
				return
			}
			update(l2, tb, l2Model[s], func(b []byte) {
				ordPut(b, 1+rng.IntN(ordTS/8-1), 0)
				ordPut(b, 0, g)
			})
		}
		if err := ref.SetDependency(l2); err != nil { // Q3
			return
		}
		r := rng.IntN(ordNRef)
		tb, ok := getModel(ref, refOff(r), refModel[r])
		if !ok {
			return
		}
		update(ref, tb, refModel[r], func(b []byte) { ordPut(b, 1+s, g) })
	}
	// lockFree reads a table the way qcow2's lookups do: pinned (Get, or
	// Peek on the queue owner's path), copied under the table lock, and
	// checks that nothing in it is newer than the model.
	lockFree := func(rng *rand.Rand) {
		s := rng.IntN(ordNL2)
		var tb *Table
		if rng.IntN(2) == 0 {
			tb = l2.Peek(l2Off(s))
		} else {
			var err error
			if tb, err = l2.Get(l2Off(s)); err != nil {
				return
			}
		}
		if tb == nil {
			return
		}
		b := make([]byte, ordTS)
		tb.Lock()
		copy(b, tb.Data)
		tb.Unlock()
		l2.Put(tb)
		if g := ordWord(b, 0); g > l2Gen[s].Load() {
			t.Errorf("lock-free read of L2 table %d: generation %d from the future", s, g)
		}
		for i := 1; i < ordTS/8; i++ {
			e := ordWord(b, i)
			if e == 0 {
				continue
			}
			kind, idx, ver := ordDecode(e)
			switch {
			case kind == ordKindRef && idx < ordNRef && ver <= refVer[idx].Load():
			case kind == ordKindData && idx < ordNData && ver <= dataVer[idx].Load():
			default:
				t.Errorf("lock-free read of L2 table %d: bad entry %d: %#x", s, i, e)
			}
		}
	}

	d.failing.Store(true)
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for range ops {
				if t.Failed() {
					return
				}
				switch p := rng.IntN(100); {
				case p < 35:
					engMu.Lock()
					link(rng)
					engMu.Unlock()
				case p < 50:
					engMu.Lock()
					unlink(rng)
					engMu.Unlock()
				case p < 60: // locked reads: no stale copy
					engMu.Lock()
					if rng.IntN(2) == 0 {
						s := rng.IntN(ordNL2)
						if tb, ok := getModel(l2, l2Off(s), l2Model[s]); ok {
							l2.Put(tb)
						}
					} else {
						r := rng.IntN(ordNRef)
						if tb, ok := getModel(ref, refOff(r), refModel[r]); ok {
							ref.Put(tb)
						}
					}
					engMu.Unlock()
				case p < 85:
					lockFree(rng)
				case p < 92:
					c := []*Cache{l2, ref}[rng.IntN(2)]
					_ = c.Write() // an eviction or a dependency flush may fail: retried later
				default:
					c := []*Cache{l2, ref}[rng.IntN(2)]
					_ = c.Flush()
				}
			}
		})
	}
	wg.Wait()
	d.failing.Store(false)
	if t.Failed() {
		return
	}
	for _, c := range []*Cache{l2, ref} {
		if err := c.Flush(); err != nil {
			t.Fatalf("%s: flush with failures off: %v", c.Name(), err)
		}
	}
	check := func(what string, off int64, model []byte) {
		if got := devBytes(t, d, off, ordTS); !bytes.Equal(got, model) {
			t.Errorf("device %s at 0x%x differs from the model", what, off)
		}
	}
	for s := range ordNL2 {
		check("L2 table", l2Off(s), l2Model[s])
	}
	for r := range ordNRef {
		check("refcount table", refOff(r), refModel[r])
	}
	// And a cold cache reads the same.
	for s := range ordNL2 {
		l2.Discard(l2Off(s)) // clean: drops the copy only
		tb, err := l2.Get(l2Off(s))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tb.Data, l2Model[s]) {
			t.Errorf("L2 table %d reread differs from the model", s)
		}
		l2.Put(tb)
	}
	lm, rm := l2.Metrics(), ref.Metrics()
	t.Logf("%d ordered writes checked, %d injected failures", d.checked.Load(), d.failed.Load())
	t.Logf("l2: %v", lm)
	t.Logf("refcount: %v", rm)
	for _, m := range []Metrics{lm, rm} {
		if m.PinnedTables != 0 || m.DirtyTables != 0 {
			t.Errorf("leftover pins or dirty tables: %v", m)
		}
	}
	if lm.WriteErrors == 0 || lm.EvictionWriteBacks == 0 {
		t.Errorf("the workload did not reach failed write-backs or evictions: %v", lm)
	}
}
