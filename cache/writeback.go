package cache

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// maxWriteWorkers bounds the concurrent device writes of one write-back
// batch (one per run of contiguous tables).
const maxWriteWorkers = 8

// wb is one table's write-back: the snapshot and the generation it holds.
type wb struct {
	t    *Table
	gen  uint64
	snap *[]byte
	err  error
}

// Write writes back every table that was dirty when Write was called
// (honouring dependencies, C5), without a trailing device flush. On error
// the failed tables stay dirty and the first error is returned.
func (c *Cache) Write() error {
	if c.closed.Load() {
		return fmt.Errorf("cache %s: %w", c.cfg.Name, ErrClosed)
	}
	c.mu.Lock()
	targets := make([]wb, 0, c.ndirty)
	for t := c.dirty.next; t != &c.dirty; t = t.next {
		targets = append(targets, wb{t: t, gen: t.gen})
	}
	for {
		var todo []*Table
		waiting := false
		for _, p := range targets {
			t := p.t
			switch {
			case t.epoch == 0 || !t.dirty || t.writtenGen >= p.gen:
				// done (or discarded)
			case t.writing:
				waiting = true // someone else's write-back; see what it achieved
			default:
				todo = append(todo, t)
			}
		}
		if len(todo) == 0 {
			if !waiting {
				c.mu.Unlock()
				return nil
			}
			c.cond.Wait()
			continue
		}
		ws := c.beginWriteLocked(todo)
		c.mu.Unlock()
		if err := c.doWrite(ws, false); err != nil {
			return err
		}
		c.mu.Lock()
	}
}

// Flush is Write followed by a device flush.
func (c *Cache) Flush() error {
	if err := c.Write(); err != nil {
		return err
	}
	if err := c.dev.Flush(); err != nil {
		return fmt.Errorf("cache %s: flush: %w", c.cfg.Name, err)
	}
	return nil
}

// evictDirty writes back the oldest dirty unpinned tables until 7/8 of
// the dirty limit is left (C6), so evictions come in batches that can share
// a vectored write instead of one table per Get. Eviction goes through
// doWrite, so it honours dependencies like any write-back.
func (c *Cache) evictDirty() error {
	c.mu.Lock()
	n := c.dirtyIdle - (c.dirtyLimit - max(c.dirtyLimit/8, 1))
	var todo []*Table
	for t := c.dirty.next; t != &c.dirty && len(todo) < n; t = t.next {
		if t.pins == 0 && !t.writing {
			todo = append(todo, t)
		}
	}
	ws := c.beginWriteLocked(todo)
	c.mu.Unlock()
	return c.doWrite(ws, true)
}

// beginWriteLocked pins each table for its write-back and records the
// generation the snapshot will hold (C4).
func (c *Cache) beginWriteLocked(ts []*Table) []wb {
	ws := make([]wb, 0, len(ts))
	for _, t := range ts {
		if !t.dirty || t.writing || t.epoch == 0 {
			continue
		}
		t.writing = true
		c.pinLocked(t) // C4: stays owned while in flight
		ws = append(ws, wb{t: t, gen: t.gen})
	}
	return ws
}

// doWrite snapshots, checks, resolves dependencies, writes and completes
// the write-backs in ws. Every entry is completed (unpinned) on return.
func (c *Cache) doWrite(ws []wb, evict bool) error {
	if len(ws) == 0 {
		return nil
	}
	// C4: copy under the table lock; modifications after this point (or
	// after the recorded gen) keep the table dirty.
	for i := range ws {
		w := &ws[i]
		w.snap = c.snaps.Get()
		w.t.mu.Lock()
		copy(*w.snap, w.t.Data)
		w.t.mu.Unlock()
	}
	var firstErr error
	if c.cfg.Before != nil {
		for i := range ws {
			if err := c.cfg.Before(ws[i].t.Off, *ws[i].snap); err != nil {
				ws[i].err = c.errAt(ws[i].t.Off, err)
				firstErr = cmpErr(firstErr, ws[i].err)
			}
		}
	}
	// C5: after the snapshot, before any byte reaches the device.
	if err := c.resolveDeps(false); err != nil {
		err = c.errAt(ws[0].t.Off, err)
		for i := range ws {
			if ws[i].err == nil {
				ws[i].err = err
			}
		}
		firstErr = cmpErr(firstErr, err)
	}
	firstErr = cmpErr(firstErr, c.writeRuns(ws))
	c.complete(ws, evict)
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// writeRuns issues one vectored write per run of contiguous tables, the
// runs concurrently.
func (c *Cache) writeRuns(ws []wb) error {
	live := make([]*wb, 0, len(ws))
	for i := range ws {
		if ws[i].err == nil {
			live = append(live, &ws[i])
		}
	}
	if len(live) == 0 {
		return nil
	}
	slices.SortFunc(live, func(a, b *wb) int {
		switch {
		case a.t.Off < b.t.Off:
			return -1
		case a.t.Off > b.t.Off:
			return 1
		}
		return 0
	})
	ts := int64(c.cfg.TableSize)
	var runs [][]*wb
	for i := 0; i < len(live); {
		j := i + 1
		for j < len(live) && live[j].t.Off == live[j-1].t.Off+ts {
			j++
		}
		runs = append(runs, live[i:j])
		i = j
	}
	writeRun := func(run []*wb) error {
		bufs := make([][]byte, len(run))
		for k, w := range run {
			bufs[k] = *w.snap
		}
		c.m.writeOps.Add(1)
		if err := c.dev.Writev(run[0].t.Off, bufs); err != nil {
			err = c.errAt(run[0].t.Off, err)
			for _, w := range run {
				w.err = err
			}
			return err
		}
		return nil
	}
	if len(runs) == 1 {
		return writeRun(runs[0])
	}
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		errs error
		next = make(chan []*wb)
	)
	for range min(len(runs), maxWriteWorkers) {
		wg.Go(func() {
			for run := range next {
				if err := writeRun(run); err != nil {
					emu.Lock()
					errs = cmpErr(errs, err)
					emu.Unlock()
				}
			}
		})
	}
	for _, run := range runs {
		next <- run
	}
	close(next)
	wg.Wait()
	return errs
}

// complete marks successfully written tables clean unless modified since
// the snapshot (C4), unpins them and wakes waiters.
func (c *Cache) complete(ws []wb, evict bool) {
	c.mu.Lock()
	for i := range ws {
		w := &ws[i]
		t := w.t
		t.writing = false
		if w.err != nil {
			c.m.writeErrors.Add(1)
		} else {
			c.m.writeBacks.Add(1)
			if evict {
				c.m.evictionWriteBacks.Add(1)
			}
			t.writtenGen = max(t.writtenGen, w.gen)
			if t.gen == w.gen {
				c.setCleanLocked(t)
			}
		}
		c.unpinLocked(t)
		c.snaps.Put(w.snap)
		w.snap = nil
	}
	c.cond.Broadcast()
	drain := c.takeDrainLocked()
	c.mu.Unlock()
	if drain {
		c.drainPending()
	}
}

// resolveDeps performs c's pending dependency (C5): flush the cache c
// depends on, else flush the device if DependsOnFlush was called. With
// onlyCache it only handles a cache dependency (QEMU
// qcow2_cache_flush_dependency). The dependency is cleared only if no new
// one was registered while flushing.
func (c *Cache) resolveDeps(onlyCache bool) error {
	c.depMu.Lock()
	defer c.depMu.Unlock()
	c.mu.Lock()
	dep, dof, g := c.depends, c.dependsOnFlush, c.depGen
	c.mu.Unlock()
	switch {
	case dep != nil:
		c.m.depFlushes.Add(1)
		if err := dep.Flush(); err != nil {
			return fmt.Errorf("flushing dependency: %w", err)
		}
		if dof && dep.dev != c.dev {
			if err := c.dev.Flush(); err != nil {
				return fmt.Errorf("device flush before write-back: %w", err)
			}
		}
	case dof && !onlyCache:
		c.m.depFlushes.Add(1)
		if err := c.dev.Flush(); err != nil {
			return fmt.Errorf("device flush before write-back: %w", err)
		}
	default:
		return nil
	}
	c.mu.Lock()
	if c.depGen == g {
		c.depends = nil
		c.dependsOnFlush = false
	}
	c.mu.Unlock()
	return nil
}

// cleaner implements cache-clean-interval: each tick drops the clean
// tables not used since the previous tick (QEMU qcow2_cache_clean_unused).
func (c *Cache) cleaner(every time.Duration) {
	defer close(c.bgDone)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tk.C:
			c.cleanUnused()
		}
	}
}

// cleanUnused drops clean tables whose last use is before the current
// tick, then advances the tick. Tables in the owned map (pinned, dirty,
// in flight) are never dropped.
func (c *Cache) cleanUnused() {
	old := c.tick.Load()
	var cand []*Table
	c.rcMu.RLock()
	if !c.closed.Load() {
		// The callback runs under ristretto's store locks: only collect
		// (C9: never take c.mu under ristretto internals).
		c.rc.IterValues(func(t *Table) bool {
			if t != nil && t.lastUse.Load() < old {
				cand = append(cand, t)
			}
			return false
		})
	}
	c.rcMu.RUnlock()
	c.mu.Lock()
	for _, p := range c.pending {
		if p.t.lastUse.Load() < old {
			cand = append(cand, p.t)
		}
	}
	var del []uint64
	for _, t := range cand {
		if t.epoch == 0 || c.owned[t.Off] != nil || t.lastUse.Load() >= old {
			continue
		}
		t.epoch = 0 // C1: dead to every lookup from now on
		t.resident.Store(false)
		c.m.cleanDrops.Add(1)
		del = append(del, c.key(t.Off))
	}
	c.tick.Add(1)
	c.mu.Unlock()
	// Free the memory too; Del blocks, so not under c.mu (C8). Deleting a
	// newer copy of the same key is harmless: it is clean (C3).
	c.rcMu.RLock()
	if !c.closed.Load() {
		for _, k := range del {
			c.rc.Del(k)
		}
	}
	c.rcMu.RUnlock()
}
