package memdev

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
)

// pageSize is the granularity at which a store shares memory with its
// snapshots.
const pageSize = 4096

// page is one pageSize block of a store. A page is written in place only
// by the store whose epoch it carries; every other store that holds it
// (a snapshot, or the store itself after a snapshot) copies it first.
type page struct {
	b     [pageSize]byte
	owner uint64
}

var epochs atomic.Uint64

// store is a byte array of size bytes held as pages, nil pages reading
// as zeros, that snapshots in time proportional to its page count, not
// its bytes: a crash clone of a device with a large reserve costs a
// table of pointers, and a Flush none of the bytes it covers.
//
// Concurrency: the Dev holds its mu exclusively for snapshot, truncate
// and grow (which change size, epoch or the table), shared for
// readAt, writeAt and zero, whose byte ranges the range lock keeps
// disjoint. Two of those may still meet in one page: cowMu makes the
// page's copy-on-write happen once, and the table's entries are atomic
// so that a reader of one part of a page sees either the old page or
// its copy (the same bytes in the part it reads).
type store struct {
	size  int64
	epoch uint64
	pages []atomic.Pointer[page]
	cowMu sync.Mutex
}

func newStore() *store { return &store{epoch: epochs.Add(1)} }

func pagesFor(n int64) int { return int((n + pageSize - 1) / pageSize) }

// snapshot returns a store with the same contents; from then on neither
// writes to the pages they share. The caller holds the Dev's mu
// exclusively.
func (s *store) snapshot() *store {
	c := &store{size: s.size, epoch: epochs.Add(1), pages: make([]atomic.Pointer[page], len(s.pages))}
	for i := range s.pages {
		c.pages[i].Store(s.pages[i].Load())
	}
	s.epoch = epochs.Add(1)
	return c
}

// resize sets the size; bytes past a shrink read as zeros if it grows
// back. The caller holds the Dev's mu exclusively.
func (s *store) resize(n int64) {
	if n < s.size {
		if tail := n % pageSize; tail != 0 {
			if p := s.pages[n/pageSize].Load(); p != nil {
				clear(s.writable(int(n / pageSize))[tail:])
			}
		}
		for i := pagesFor(n); i < len(s.pages); i++ {
			s.pages[i].Store(nil)
		}
		s.pages = s.pages[:pagesFor(n)]
	} else if k := pagesFor(n); k > len(s.pages) {
		if k <= cap(s.pages) {
			s.pages = s.pages[:k]
		} else {
			np := make([]atomic.Pointer[page], k, k+k/4)
			for i := range s.pages {
				np[i].Store(s.pages[i].Load())
			}
			s.pages = np
		}
	}
	s.size = n
}

// writable returns page i's bytes for writing, copying the page first
// unless this store owns it.
func (s *store) writable(i int) *[pageSize]byte {
	if p := s.pages[i].Load(); p != nil && p.owner == s.epoch {
		return &p.b
	}
	s.cowMu.Lock()
	defer s.cowMu.Unlock()
	p := s.pages[i].Load()
	if p != nil && p.owner == s.epoch {
		return &p.b
	}
	np := &page{owner: s.epoch}
	if p != nil {
		np.b = p.b
	}
	s.pages[i].Store(np)
	return &np.b
}

// readAt copies [off, off+len(b)) into b; the range lies within size.
func (s *store) readAt(b []byte, off int64) {
	for len(b) > 0 {
		i, o := int(off/pageSize), int(off%pageSize)
		k := min(len(b), pageSize-o)
		if p := s.pages[i].Load(); p != nil {
			copy(b[:k], p.b[o:])
		} else {
			clear(b[:k])
		}
		b, off = b[k:], off+int64(k)
	}
}

// writeAt copies b to off; the range lies within size.
func (s *store) writeAt(b []byte, off int64) {
	for len(b) > 0 {
		i, o := int(off/pageSize), int(off%pageSize)
		k := copy(s.writable(i)[o:], b)
		b, off = b[k:], off+int64(k)
	}
}

// zero clears [off, off+n), within size, dropping whole pages.
func (s *store) zero(off, n int64) {
	for n > 0 {
		i, o := int(off/pageSize), off%pageSize
		k := min(n, pageSize-o)
		if k == pageSize {
			s.pages[i].Store(nil)
		} else if s.pages[i].Load() != nil {
			clear(s.writable(i)[o : o+k])
		}
		off, n = off+k, n-k
	}
}

// bytes returns a copy of the contents.
func (s *store) bytes() []byte {
	b := make([]byte, s.size)
	s.readAt(b, 0)
	return b
}

var zeroPage [pageSize]byte

// sum is the SHA-256 of the contents.
func (s *store) sum() [sha256.Size]byte {
	h := sha256.New()
	for i := range s.pages {
		n := min(int64(pageSize), s.size-int64(i)*pageSize)
		if p := s.pages[i].Load(); p != nil {
			h.Write(p.b[:n])
		} else {
			h.Write(zeroPage[:n])
		}
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
