package vmdk

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vmdk/format"
)

// maxLoadedGTEs bounds the grain table entries a writable Disk holds in
// memory (KD8), 8 bytes each with the on-disk copy (512 MiB): twice as
// many as a file of 2 TiB (where no grain can start, KD9) holds grains
// of 64 KiB, so a writer filling the file never reaches it. Reads load
// tables only up to half of it (maxReadGTEs: every table of an image
// of 2 TiB of 64 KiB grains), the rest kept for writes.
// (Variables for tests.)
var (
	maxLoadedGTEs int64 = 1 << 26
	maxReadGTEs         = maxLoadedGTEs / 2
)

// grainTables are a writable sparse extent's grain table entries
// (KD8): each table is read from the file the first time a write needs
// it, or a read while fewer than maxReadGTEs are loaded, and held from
// then on; other reads take the entry from the file, as a read-only
// Disk's do. Only Flush writes a table into the file, and only a loaded
// one, so a table not loaded is on disk as Open found it.
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

// limit is the entries loaded by every extent of one Disk, bounded by
// maxLoadedGTEs.
type limit struct{ n atomic.Int64 }

// gtable is one loaded grain table.
type gtable struct {
	// mem are its entries as reads and writes see them.
	mem []atomic.Uint32
	// disk are its entries as on disk, or as the running Flush writes
	// them: only Flush changes them (under the Disk's flushMu).
	disk []byte
}

// ErrTooManyTables is a write refused because the grain tables the
// writes since Open needed hold more entries than a writable Disk keeps
// in memory (maxLoadedGTEs), before the grain it names is touched; a
// Disk opened anew starts with none loaded.
var ErrTooManyTables = fmt.Errorf("vmdk: the writes since the image was opened need more grain tables than qring holds in memory (2^26 entries): flush, close and reopen it: %w", block.ErrNotSupported)

// peek is the entry of grain gi if its table is loaded.
func (t *grainTables) peek(gi int64) (uint32, bool) {
	if tab := t.tabs[gi/t.gtes].Load(); tab != nil {
		return tab.mem[gi%t.gtes].Load(), true
	}
	return 0, false
}

// entry is grain gi's entry, its table loaded first if need be; the
// entry changes only under the extent's writer lock.
func (t *grainTables) entry(gi int64) (*atomic.Uint32, error) {
	tab, err := t.table(gi/t.gtes, maxLoadedGTEs)
	if err != nil {
		return nil, err
	}
	return &tab.mem[gi%t.gtes], nil
}

// table is table i, loaded from the file if need be and no more than
// most entries would be loaded then (else ErrTooManyTables).
func (t *grainTables) table(i, most int64) (*gtable, error) {
	if tab := t.tabs[i].Load(); tab != nil {
		return tab, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tab := t.tabs[i].Load(); tab != nil {
		return tab, nil
	}
	if t.loaded.n.Load()+t.gtes > most {
		return nil, ErrTooManyTables
	}
	tab := &gtable{mem: make([]atomic.Uint32, t.gtes), disk: make([]byte, 4*t.gtes)}
	if err := block.ReadAt(t.file, tab.disk, int64(t.gts[i])*format.SectorSize); err != nil {
		return nil, err
	}
	for j := range tab.mem {
		tab.mem[j].Store(format.Entry(tab.disk, j))
	}
	t.loaded.n.Add(t.gtes)
	t.tabs[i].Store(tab)
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
		tab, err := t.table(gi/t.gtes, maxReadGTEs)
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
