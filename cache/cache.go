package cache

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/qring/qring/block"
)

// Table sizes accepted by New (QEMU: l2-cache-entry-size in [512, cluster];
// clusters are at most 2 MiB).
const (
	MinTableSize = 512
	MaxTableSize = 2 << 20
)

// Config configures a Cache.
type Config struct {
	// Name is "l2" or "refcount"; it prefixes errors.
	Name string
	// TableSize is the size of every table in bytes: a power of two in
	// [MinTableSize, MaxTableSize]. Table offsets are multiples of it.
	TableSize int
	// MaxBytes is the capacity for clean tables (ristretto MaxCost). It is
	// rounded down to whole tables, with a minimum of 2 tables.
	MaxBytes int64
	// MemAlign is the alignment of table memory (O_DIRECT); 0 means 4096.
	MemAlign int
	// CleanInterval is cache-clean-interval: clean tables unused for this
	// long are dropped by a background goroutine. 0 disables it.
	CleanInterval time.Duration
	// Before, if set, is called with a table's snapshot before it is
	// written back (the engine's metadata-overlap check); an error aborts
	// that table's write-back and it stays dirty.
	Before func(off int64, data []byte) error
}

// Table is one cached table. Off and Data are set by the cache; a pin
// holder may read and modify Data (see the package doc on modifying).
type Table struct {
	Off  int64  // device offset; read-only for users
	Data []byte // TableSize bytes, big-endian on-disk format

	mu    sync.Mutex // protects Data against a write-back's snapshot copy (C4)
	owner *Cache     // catches a table put into the wrong cache

	// Guarded by Cache.mu.
	pins       int32
	dirty      bool
	writing    bool   // a write-back of it is in flight (C4)
	loading    bool   // its device read is in flight (C7)
	unsynced   bool   // zeroed by GetEmpty and not yet marked dirty (C3)
	epoch      uint64 // == Cache.epoch while alive; 0 once dead (C1)
	gen        uint64 // bumped by MarkDirty
	writtenGen uint64 // gen of the last successful write-back
	prev, next *Table // dirty list, oldest first
	ready      chan struct{}
	loadErr    error

	// Atomic: touched by ristretto callbacks and the hit path (C8, C10).
	resident atomic.Bool   // hint: a Set of this object succeeded and was not yet evicted/rejected
	lastUse  atomic.Uint32 // Cache.tick at the last Get (cache-clean-interval)
}

// Lock locks t.Data against a concurrent write-back's snapshot copy. Only
// needed when modifying Data without a lock that also excludes Write/Flush.
func (t *Table) Lock() { t.mu.Lock() }

// Unlock undoes Lock.
func (t *Table) Unlock() { t.mu.Unlock() }

type pendEntry struct {
	t   *Table
	gen uint64
}

// Cache is a metadata table cache over a block.Device. It is safe for
// concurrent use.
type Cache struct {
	dev       block.Device
	cfg       Config
	shift     uint // log2(TableSize)
	capTables int64
	rc        *ristretto.Cache[uint64, *Table]
	snaps     *block.BufPool

	mu         sync.Mutex
	cond       sync.Cond // on mu; broadcast when a write-back completes
	owned      map[int64]*Table
	pending    map[int64]pendEntry
	pendGen    uint64
	pendLimit  int
	draining   bool
	dirty      Table // sentinel of the dirty list
	ndirty     int   // dirty tables
	dirtyIdle  int   // dirty tables with no pin (C6)
	npinned    int
	dirtyLimit int
	epoch      uint64
	isClosed   bool

	depMu          sync.Mutex // serialises dependency resolution (C5)
	depends        *Cache     // guarded by mu
	dependsOnFlush bool       // guarded by mu
	depGen         uint64     // guarded by mu

	closed atomic.Bool
	rcMu   sync.RWMutex // read-held around blocking ristretto calls; write-held by Close
	tick   atomic.Uint32
	stop   chan struct{}
	bgDone chan struct{}

	m counters
}

// maxCounted bounds the tables ristretto keeps admission counters for
// (NumCounters; about 2 MiB of counters).
const maxCounted = 1 << 18

// New returns a cache of tables of dev.
func New(dev block.Device, cfg Config) (*Cache, error) {
	if cfg.Name == "" {
		cfg.Name = "tables"
	}
	ts := cfg.TableSize
	if dev == nil {
		return nil, fmt.Errorf("cache %s: nil device: %w", cfg.Name, ErrConfig)
	}
	if ts < MinTableSize || ts > MaxTableSize || ts&(ts-1) != 0 {
		return nil, fmt.Errorf("cache %s: table size %d: %w", cfg.Name, ts, ErrConfig)
	}
	if cfg.MemAlign == 0 {
		cfg.MemAlign = block.DefaultMemAlign
	}
	if cfg.MemAlign < 0 || cfg.MemAlign&(cfg.MemAlign-1) != 0 {
		return nil, fmt.Errorf("cache %s: memory alignment %d: %w", cfg.Name, cfg.MemAlign, ErrConfig)
	}
	if cfg.CleanInterval < 0 {
		return nil, fmt.Errorf("cache %s: clean interval %v: %w", cfg.Name, cfg.CleanInterval, ErrConfig)
	}
	capTables := max(cfg.MaxBytes/int64(ts), 2) // QEMU MIN_L2_CACHE_SIZE is 2 entries
	cfg.MaxBytes = capTables * int64(ts)
	c := &Cache{
		dev:        dev,
		cfg:        cfg,
		shift:      uint(bits.TrailingZeros(uint(ts))),
		capTables:  capTables,
		snaps:      block.NewBufPool(ts, cfg.MemAlign),
		owned:      make(map[int64]*Table),
		pending:    make(map[int64]pendEntry),
		epoch:      1,
		dirtyLimit: int(max(capTables, 4)),
		// Bound the memory held by tables whose Set is unconfirmed (C2):
		// about a quarter of the capacity, at least 8 tables.
		pendLimit: int(min(max(capTables/4, 8), 1024)),
	}
	c.cond.L = &c.mu
	c.dirty.prev, c.dirty.next = &c.dirty, &c.dirty
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *Table]{
		// Ristretto allocates its counters up front: ten per table,
		// for at most maxCounted tables (a huge MaxBytes must not
		// exhaust memory before a table is read; admission is only
		// less precise past it).
		NumCounters:        max(10*min(capTables, maxCounted), 64),
		MaxCost:            cfg.MaxBytes,
		BufferItems:        64,
		Metrics:            true,
		IgnoreInternalCost: true, // cost is TableSize; 56 B/item would distort tiny caches
		KeyToHash:          hashKey,
		// C8: count, and clear the residency hint so the next Put re-Sets.
		OnEvict: func(it *ristretto.Item[*Table]) {
			c.m.evictions.Add(1)
			if it.Value != nil {
				it.Value.resident.Store(false)
			}
		},
		OnReject: func(it *ristretto.Item[*Table]) {
			c.m.setsRejected.Add(1)
			if it.Value != nil {
				it.Value.resident.Store(false)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", cfg.Name, err)
	}
	c.rc = rc
	if cfg.CleanInterval > 0 {
		c.stop = make(chan struct{})
		c.bgDone = make(chan struct{})
		go c.cleaner(cfg.CleanInterval)
	}
	return c, nil
}

// hashKey spreads table indexes over ristretto's shards and sketch
// (splitmix64 finaliser: a bijection, so keys never collide).
func hashKey(k uint64) (uint64, uint64) {
	k ^= k >> 30
	k *= 0xbf58476d1ce4e5b9
	k ^= k >> 27
	k *= 0x94d049bb133111eb
	k ^= k >> 31
	return k, 0
}

// TableSize is the configured table size.
func (c *Cache) TableSize() int { return c.cfg.TableSize }

// Name is the configured name.
func (c *Cache) Name() string { return c.cfg.Name }

// Capacity is the clean-table capacity in bytes (MaxBytes rounded).
func (c *Cache) Capacity() int64 { return c.cfg.MaxBytes }

func (c *Cache) key(off int64) uint64 { return uint64(off) >> c.shift }

func (c *Cache) checkOff(off int64) error {
	if off < 0 || off&int64(c.cfg.TableSize-1) != 0 || off+int64(c.cfg.TableSize) < off {
		return c.errAt(off, ErrMisaligned)
	}
	return nil
}

// Get returns the table at off, pinned, reading it from the device if it
// is not cached. Concurrent Gets of a missing table share one read (C7).
func (c *Cache) Get(off int64) (*Table, error) { return c.get(off, true) }

// GetEmpty returns the table at off, pinned, with zeroed contents and
// without reading the device (a newly allocated table). It marks nothing
// dirty; a table zeroed here and Put without MarkDirty is dropped (C3).
func (c *Cache) GetEmpty(off int64) (*Table, error) { return c.get(off, false) }

func (c *Cache) get(off int64, read bool) (*Table, error) {
	if c.closed.Load() {
		return nil, c.errAt(off, ErrClosed)
	}
	if err := c.checkOff(off); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.dirtyIdle > c.dirtyLimit { // C6: make room before taking more
		c.mu.Unlock()
		if err := c.evictDirty(); err != nil {
			return nil, err
		}
		c.mu.Lock()
	}
	if c.isClosed {
		c.mu.Unlock()
		return nil, c.errAt(off, ErrClosed)
	}
	t := c.lookupLocked(off)
	if t == nil {
		// C2/C7: every other place missed; this is the one live copy.
		c.m.misses.Add(1)
		t = &Table{Off: off, Data: block.AlignedBuf(c.cfg.TableSize, c.cfg.MemAlign), owner: c, epoch: c.epoch}
		t.lastUse.Store(c.tick.Load())
		c.owned[off] = t
		c.pinLocked(t)
		if !read {
			t.unsynced = true
			c.mu.Unlock()
			return t, nil
		}
		t.loading = true
		t.ready = make(chan struct{})
		c.mu.Unlock()
		return c.load(t)
	}
	loading := t.loading
	if loading {
		c.m.misses.Add(1) // waits for the single in-flight read (C7)
	} else {
		c.m.hits.Add(1)
	}
	t.lastUse.Store(c.tick.Load())
	c.pinLocked(t)
	if !read {
		// C3: zeros are not on the device until a MarkDirty'd write-back;
		// until then the table must not be cached clean.
		t.unsynced = true
	}
	c.mu.Unlock()
	if loading {
		<-t.ready // C7: the loader closes ready after setting loadErr
		if t.loadErr != nil {
			c.Put(t)
			return nil, c.errAt(off, t.loadErr)
		}
	}
	if !read {
		t.mu.Lock()
		clear(t.Data)
		t.mu.Unlock()
	}
	return t, nil
}

// Peek returns the table at off, pinned, if it is cached and loaded, and
// nil otherwise: it never reads the device, writes dirty tables back or
// waits for another goroutine's load. It is for callers that must not
// block on I/O (qcow2's Queue owner: a write-back may wait for the very
// writes that caller has in flight). Put it as after Get.
func (c *Cache) Peek(off int64) *Table {
	if c.closed.Load() || c.checkOff(off) != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed {
		return nil
	}
	t := c.lookupLocked(off)
	if t == nil || t.loading {
		return nil
	}
	c.m.hits.Add(1)
	t.lastUse.Store(c.tick.Load())
	c.pinLocked(t)
	return t
}

// lookupLocked finds the live table at off in the owned map, the pending
// map or ristretto (C1), moving a found clean table into the owned map.
// It does not pin.
func (c *Cache) lookupLocked(off int64) *Table {
	if t := c.owned[off]; t != nil {
		return t
	}
	if p, ok := c.pending[off]; ok && p.t.epoch == c.epoch {
		c.owned[off] = p.t
		return p.t
	}
	if t, ok := c.rc.Get(c.key(off)); ok && t != nil && t.epoch == c.epoch && t.Off == off {
		c.owned[off] = t
		return t
	}
	return nil
}

func (c *Cache) load(t *Table) (*Table, error) {
	c.m.loads.Add(1)
	err := block.ReadAt(c.dev, t.Data, t.Off)
	c.mu.Lock()
	t.loading = false
	if err != nil {
		c.m.loadErrors.Add(1)
		t.loadErr = err
		c.killLocked(t) // waiters see loadErr; nobody is served this object again
	}
	close(t.ready)
	if err != nil {
		c.unpinLocked(t)
	}
	c.mu.Unlock()
	if err != nil {
		return nil, c.errAt(t.Off, err)
	}
	return t, nil
}

// Put unpins t. A clean table whose last pin goes is handed to ristretto.
func (c *Cache) Put(t *Table) {
	if t == nil {
		return
	}
	c.mu.Lock()
	if t.pins <= 0 || t.owner != c {
		c.mu.Unlock()
		panic(fmt.Sprintf("cache %s: Put of unpinned or foreign table at 0x%x", c.cfg.Name, t.Off))
	}
	c.unpinLocked(t)
	drain := c.takeDrainLocked()
	c.mu.Unlock()
	if drain {
		c.drainPending()
	}
}

// MarkDirty records that t.Data was modified. The caller holds a pin.
func (c *Cache) MarkDirty(t *Table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.pins <= 0 || t.owner != c {
		panic(fmt.Sprintf("cache %s: MarkDirty of unpinned or foreign table at 0x%x", c.cfg.Name, t.Off))
	}
	if t.epoch == 0 {
		return // discarded while pinned: its cluster is free, never write it
	}
	t.gen++
	t.unsynced = false
	t.epoch = c.epoch // dirty tables survive Invalidate
	c.setDirtyLocked(t)
}

func (c *Cache) pinLocked(t *Table) {
	if t.pins == 0 {
		c.npinned++
		if t.dirty {
			c.dirtyIdle--
		}
	}
	t.pins++
}

func (c *Cache) unpinLocked(t *Table) {
	t.pins--
	if t.pins > 0 {
		return
	}
	c.npinned--
	if t.dirty {
		c.dirtyIdle++
		return
	}
	c.releaseLocked(t)
}

func (c *Cache) setDirtyLocked(t *Table) {
	if t.dirty {
		return
	}
	t.dirty = true
	t.prev = c.dirty.prev
	t.next = &c.dirty
	t.prev.next = t
	c.dirty.prev = t
	c.ndirty++
	if t.pins == 0 {
		c.dirtyIdle++
	}
}

func (c *Cache) setCleanLocked(t *Table) {
	if !t.dirty {
		return
	}
	t.dirty = false
	t.prev.next = t.next
	t.next.prev = t.prev
	t.prev, t.next = nil, nil
	c.ndirty--
	if t.pins == 0 {
		c.dirtyIdle--
	}
}

// killLocked makes t dead: out of the owned map, never served again (C1)
// and never written back.
func (c *Cache) killLocked(t *Table) {
	c.setCleanLocked(t)
	t.epoch = 0
	t.resident.Store(false)
	if c.owned[t.Off] == t {
		delete(c.owned, t.Off)
	}
}

// releaseLocked moves a clean, unpinned table out of the owned map into
// ristretto (C3), or drops it if it may not be served.
func (c *Cache) releaseLocked(t *Table) {
	if c.owned[t.Off] == t {
		delete(c.owned, t.Off)
	}
	if t.epoch != c.epoch || t.unsynced || c.isClosed {
		// Dead, invalidated, or zeroed without being dirtied (its content
		// may not match the device): never cache it.
		if t.epoch != 0 {
			t.epoch = 0
		}
		return
	}
	if t.resident.Load() {
		return // C10: ristretto (or its set buffer, tracked in pending) has this object
	}
	t.resident.Store(true)
	if !c.rc.Set(c.key(t.Off), t, int64(c.cfg.TableSize)) {
		t.resident.Store(false)
		c.m.setsDropped.Add(1)
		return // dropped: clean, so a later Get simply rereads it
	}
	c.pendGen++
	c.pending[t.Off] = pendEntry{t: t, gen: c.pendGen} // C2
}

func (c *Cache) takeDrainLocked() bool {
	if len(c.pending) <= c.pendLimit || c.draining || c.isClosed {
		return false
	}
	c.draining = true
	return true
}

// drainPending waits until ristretto processed every Set recorded in the
// pending map so far, then forgets those entries (C2).
func (c *Cache) drainPending() {
	c.mu.Lock()
	g := c.pendGen
	c.mu.Unlock()
	c.rcMu.RLock()
	ok := !c.closed.Load()
	if ok {
		c.rc.Wait() // blocking: never under c.mu (C8)
	}
	c.rcMu.RUnlock()
	c.mu.Lock()
	if ok {
		for off, p := range c.pending {
			if p.gen <= g {
				delete(c.pending, off)
			}
		}
	}
	c.draining = false
	c.mu.Unlock()
}

// Discard drops the table at off (its cluster was freed) without writing
// it, even if dirty. A write-back already in flight is waited for, so it
// cannot land after a later user of the offset.
func (c *Cache) Discard(off int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		t := c.owned[off]
		if t == nil {
			break
		}
		if t.writing {
			c.cond.Wait()
			continue
		}
		c.killLocked(t)
		break
	}
	if p, ok := c.pending[off]; ok {
		p.t.epoch = 0
		p.t.resident.Store(false)
	}
	if c.isClosed {
		return
	}
	if t, ok := c.rc.Get(c.key(off)); ok && t != nil {
		t.epoch = 0 // C1: killed in place; Del would block
		t.resident.Store(false)
	}
}

// Invalidate drops every clean table (e.g. after a repair rewrote metadata
// on the device). Dirty tables are kept; clean tables still pinned are
// dropped at their last Put.
func (c *Cache) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++ // C1: every object not re-stamped below is dead to lookups
	for _, t := range c.owned {
		if t.dirty || t.writing {
			t.epoch = c.epoch
		}
	}
}

// SetDependency makes c depend on dep (QEMU qcow2_cache_set_dependency):
// before any table of c is written back, dep is flushed. dep's own
// dependency, and c's existing dependency if it is another cache, are
// flushed first. Callers serialise SetDependency calls (the engine's
// metadata lock).
func (c *Cache) SetDependency(dep *Cache) error {
	if dep == nil {
		return fmt.Errorf("cache %s: nil dependency: %w", c.cfg.Name, ErrConfig)
	}
	if dep == c {
		return fmt.Errorf("cache %s: depends on itself: %w", c.cfg.Name, ErrCycle)
	}
	if c.closed.Load() {
		return fmt.Errorf("cache %s: %w", c.cfg.Name, ErrClosed)
	}
	if err := dep.resolveDeps(true); err != nil {
		return fmt.Errorf("cache %s: %w", dep.cfg.Name, err)
	}
	c.mu.Lock()
	cur := c.depends
	c.mu.Unlock()
	if cur != nil && cur != dep {
		if err := c.resolveDeps(true); err != nil {
			return fmt.Errorf("cache %s: %w", c.cfg.Name, err)
		}
	}
	for d := dep; d != nil; {
		d.mu.Lock()
		next := d.depends
		d.mu.Unlock()
		if next == c {
			return fmt.Errorf("cache %s: depending on %s: %w", c.cfg.Name, dep.cfg.Name, ErrCycle)
		}
		d = next
	}
	c.mu.Lock()
	c.depends = dep
	c.depGen++
	c.mu.Unlock()
	return nil
}

// DependsOnFlush makes the next write-back of any table of c wait for a
// device flush first (QEMU qcow2_cache_depends_on_flush).
func (c *Cache) DependsOnFlush() {
	c.mu.Lock()
	c.dependsOnFlush = true
	c.depGen++
	c.mu.Unlock()
}

// Close stops background work and releases ristretto. It does not write
// back dirty tables: the engine Flushes first.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		return fmt.Errorf("cache %s: %w", c.cfg.Name, ErrClosed)
	}
	c.isClosed = true
	c.closed.Store(true)
	c.mu.Unlock()
	if c.stop != nil {
		close(c.stop)
		<-c.bgDone
	}
	c.rcMu.Lock() // no Wait/Del in flight: ristretto.Close is unsafe against them
	c.rc.Close()
	c.rcMu.Unlock()
	return nil
}
