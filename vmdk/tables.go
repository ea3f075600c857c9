package vmdk

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vmdk/format"
)

// maxLoadedGTEs bounds the grain table entries a writable Disk holds in
// memory (KD8), 8 bytes each with the on-disk copy (512 MiB): past it a
// table is loaded in place of the least recently used one whose entries
// are all on disk (Flush having written them; a write needing room when
// none is flushes first), as QEMU's vmdk keeps a cache of 16 tables.
// Reads load tables only while fewer than half of it (maxReadGTEs) are
// loaded, and never in place of another: past it they take the entry
// from the file. (Variables for tests.)
var (
	maxLoadedGTEs int64 = 1 << 26
	maxReadGTEs         = maxLoadedGTEs / 2
)

// grainTables are a writable sparse extent's grain table entries
// (KD8): each table is read from the file the first time a write needs
// it, or a read while fewer than maxReadGTEs are loaded, and held until
// it is the least recently used one with nothing to flush and the
// bound needs its room; other reads take the entry from the file, as a
// read-only Disk's do. Only Flush writes a table into the file, and
// only a loaded one, so a table not loaded is on disk as Flush or Open
// left it.
type grainTables struct {
	file block.Device
	gtes int64
	// gts and rgts are the sectors of the grain tables of the directory
	// and of the redundant one (nil without one), by directory entry.
	gts, rgts []uint32

	tabs   []atomic.Pointer[gtable]
	mu     sync.Mutex // loading one
	loaded *limit
}

// limit is the tables loaded by every extent of one Disk: n entries,
// bounded by maxLoadedGTEs, in lru (front: used last).
type limit struct {
	n   atomic.Int64
	mu  sync.Mutex // lru, gtable.el, evicting and pinning
	lru list.List  // of *gtable
}

// gtable is one loaded grain table.
type gtable struct {
	// mem are its entries as reads and writes see them.
	mem []atomic.Uint32
	// disk are its entries as on disk, or as the running Flush writes
	// them: only Flush changes them (under the Disk's flushMu).
	disk []byte

	t  *grainTables
	i  int64
	el *list.Element // in limit.lru; nil once evicted (under limit.mu)
	// users are the writes that pinned it (loadTables) and have not
	// ended; pending its entries set in memory that Flush has not
	// written yet. A table with either is never evicted.
	users, pending atomic.Int32
}

// ErrTooManyTables is a write refused because it alone needs more grain
// tables at once than a writable Disk keeps in memory (maxLoadedGTEs),
// before the grain it names is touched (a few concurrent writes may
// need them too).
var ErrTooManyTables = fmt.Errorf("vmdk: the write needs more grain tables at once than qring holds in memory (2^26 entries): write less at a time: %w", block.ErrNotSupported)

// errFull is a table that cannot be loaded for a write until Flush
// writes the pending entries of others.
var errFull = errors.New("vmdk: every loaded grain table has entries to flush")

// peek is the entry of grain gi if its table is loaded.
func (t *grainTables) peek(gi int64) (uint32, bool) {
	if tab := t.tabs[gi/t.gtes].Load(); tab != nil {
		return tab.mem[gi%t.gtes].Load(), true
	}
	return 0, false
}

// entry is grain gi's entry in its table, which the write calling it
// pinned (loadTables); the entry changes only under the extent's writer
// lock.
func (t *grainTables) entry(gi int64) (*atomic.Uint32, error) {
	tab := t.tabs[gi/t.gtes].Load()
	if tab == nil {
		return nil, fmt.Errorf("vmdk: grain table %d not loaded for a write: %w", gi/t.gtes, block.ErrNotSupported)
	}
	return &tab.mem[gi%t.gtes], nil
}

// fresh counts a new entry of grain gi, set in memory, as pending in
// its (pinned) table until Flush writes it.
func (t *grainTables) fresh(gi int64) { t.tabs[gi/t.gtes].Load().pending.Add(1) }

// flushed counts the entries of grains, written by Flush, as no longer
// pending.
func (t *grainTables) flushed(grains []int64) {
	for _, gi := range grains {
		t.tabs[gi/t.gtes].Load().pending.Add(-1)
	}
}

// pin pins tab for a write if it is still loaded.
func (l *limit) pin(tab *gtable) bool {
	if tab == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if tab.el == nil {
		return false
	}
	tab.users.Add(1)
	l.lru.MoveToFront(tab.el)
	return true
}

// unpin ends the writes' pins.
func unpin(tabs []*gtable) {
	for _, tab := range tabs {
		tab.users.Add(-1)
	}
}

// reserve makes room for need more entries, evicting the least recently
// used tables with no users and nothing pending (under l.mu), and counts
// them loaded; errFull when the others leave no room.
func (l *limit) reserve(need int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for el, k := l.lru.Back(), l.lru.Len(); l.n.Load()+need > maxLoadedGTEs && el != nil && k > 0; k-- {
		tab := el.Value.(*gtable)
		prev := el.Prev()
		if tab.users.Load() == 0 && tab.pending.Load() == 0 {
			l.lru.Remove(el)
			tab.el = nil
			tab.t.tabs[tab.i].Store(nil)
			l.n.Add(-tab.t.gtes)
		}
		el = prev
	}
	if l.n.Load()+need > maxLoadedGTEs {
		return errFull
	}
	l.n.Add(need)
	return nil
}

// table is table i, loaded from the file if need be: for a write (pin)
// pinned, in place of others if the bound needs it (errFull when none
// can go); for a read only while fewer than maxReadGTEs entries are
// loaded (else ErrTooManyTables).
func (t *grainTables) table(i int64, pin bool) (*gtable, error) {
	tab := t.tabs[i].Load()
	if !pin && tab != nil {
		return tab, nil
	}
	if pin && t.loaded.pin(tab) {
		return tab, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tab := t.tabs[i].Load(); tab != nil {
		if !pin || t.loaded.pin(tab) {
			return tab, nil
		}
	}
	l := t.loaded
	if pin {
		if err := l.reserve(t.gtes); err != nil {
			return nil, err
		}
	} else {
		l.mu.Lock()
		if l.n.Load()+t.gtes > maxReadGTEs {
			l.mu.Unlock()
			return nil, ErrTooManyTables
		}
		l.n.Add(t.gtes)
		l.mu.Unlock()
	}
	tab = &gtable{mem: make([]atomic.Uint32, t.gtes), disk: make([]byte, 4*t.gtes), t: t, i: i}
	if err := block.ReadAt(t.file, tab.disk, int64(t.gts[i])*format.SectorSize); err != nil {
		l.n.Add(-t.gtes)
		return nil, err
	}
	for j := range tab.mem {
		tab.mem[j].Store(format.Entry(tab.disk, j))
	}
	l.mu.Lock()
	tab.el = l.lru.PushFront(tab)
	if pin {
		tab.users.Add(1)
	}
	t.tabs[i].Store(tab)
	l.mu.Unlock()
	return tab, nil
}

// get is grain gi's entry, from its table, loaded if fewer than
// maxReadGTEs are, else from the file. An entry read from the file while
// a write loaded its table is taken from the table instead: the file's
// may be one that write's Flush put there since.
func (t *grainTables) get(gi int64) (uint32, error) {
	if g, ok := t.peek(gi); ok {
		return g, nil
	}
	if t.loaded.n.Load()+t.gtes <= maxReadGTEs {
		tab, err := t.table(gi/t.gtes, false)
		if err == nil {
			return tab.mem[gi%t.gtes].Load(), nil
		}
		if !errors.Is(err, ErrTooManyTables) {
			return 0, err
		}
	}
	var b [4]byte
	if err := block.ReadAt(t.file, b[:], int64(t.gts[gi/t.gtes])*format.SectorSize+4*(gi%t.gtes)); err != nil {
		return 0, err
	}
	if g, ok := t.peek(gi); ok {
		return g, nil
	}
	return format.Entry(b[:], 0), nil
}
