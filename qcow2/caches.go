package qcow2

import (
	"fmt"

	"github.com/qring/qring/cache"
)

// initCaches sizes and creates the L2 and refcount caches from the
// options (QEMU's l2-cache-size, l2-cache-entry-size and
// refcount-cache-size), with the overlap checks (Q9) as write-back hooks.
func (im *Image) initCaches() error {
	g := &im.g
	cs := g.ClusterSize
	full := im.l1.Load().size() * cs // bytes of L2 covering the whole image
	l2size := im.opts.L2CacheSize
	if l2size <= 0 {
		l2size = int64(min(full, 32<<20))
	}
	// A maximum, as QEMU's: no more than the image's L2 tables need
	// (qcow2-cache.txt), however much is asked for.
	l2size = min(l2size, int64(full))
	entry := uint64(im.opts.L2CacheEntrySize)
	if entry == 0 {
		if uint64(l2size) >= full {
			entry = cs
		} else {
			entry = min(cs, 4096)
		}
	}
	if entry < 512 || entry > cs || entry&(entry-1) != 0 {
		return fmt.Errorf("qcow2: l2-cache-entry-size %d must be a power of two in [512, %d]", entry, cs)
	}
	if uint64(l2size) < 2*entry {
		l2size = int64(2 * entry)
	}
	im.sliceSize = entry
	var err error
	im.l2c, err = cache.New(im.dev, cache.Config{Name: "l2", TableSize: int(entry), MaxBytes: l2size,
		MemAlign: im.memAlign, CleanInterval: im.opts.CacheCleanInterval, Before: im.dfBeforeL2Write}) // DF5, Q9
	if err != nil {
		return err
	}
	rcsize := im.opts.RefcountCacheSize
	if rcsize <= 0 {
		rcsize = int64(4 * cs)
	}
	if rcsize < int64(2*cs) {
		rcsize = int64(2 * cs)
	}
	im.rbc, err = cache.New(im.dev, cache.Config{Name: "refcount", TableSize: int(cs), MaxBytes: rcsize,
		MemAlign: im.memAlign, CleanInterval: im.opts.CacheCleanInterval, Before: im.overlapCheckRefblockWrite})
	if err != nil {
		im.l2c.Close()
		return err
	}
	return nil
}

func (im *Image) closeCaches() {
	if im.l2c != nil {
		im.l2c.Close()
	}
	if im.rbc != nil {
		im.rbc.Close()
	}
}
