package qcow2

import (
	"sync/atomic"

	"github.com/qring/qring/qcow2/format"
)

// l1Table is the active L1 table in memory. Its entries change only
// under Image.mu (ensureL2Locked, Check's repair); the read path and the
// overwrite path read them without it, so each entry is an atomic. The
// table itself is replaced only as a whole (growL1, Image.l1).
type l1Table struct {
	e []atomic.Uint64
}

func newL1Table(n uint64) *l1Table { return &l1Table{e: make([]atomic.Uint64, n)} }

// size is the number of entries.
func (t *l1Table) size() uint64 { return uint64(len(t.e)) }

func (t *l1Table) load(i uint64) format.L1Entry { return format.L1Entry(t.e[i].Load()) }

func (t *l1Table) store(i uint64, e format.L1Entry) { t.e[i].Store(uint64(e)) }

// entries returns a copy of the entries (Check's walk).
func (t *l1Table) entries() []format.L1Entry {
	out := make([]format.L1Entry, len(t.e))
	for i := range t.e {
		out[i] = format.L1Entry(t.e[i].Load())
	}
	return out
}
