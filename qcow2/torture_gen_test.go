package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/qring/qring/block"
)

// The torture suite's op generator: a seed gives one op sequence, the
// same under every configuration (offsets and lengths are in bytes,
// independent of the cluster size), so every configuration must end with
// the same guest contents as the flat model.

type tkind uint8

const (
	opWrite tkind = iota
	opZero
	opDiscard
	opFlush
	opRead
	opReopen
	opGrow
	opBatch
	opCheck
	opShrink
	opSnap
)

var tkindNames = [...]string{"write", "zero", "discard", "flush", "read", "reopen", "grow", "batch", "check", "shrink", "snapshot"}

// Snapshot actions (top.n of an opSnap).
const (
	snapCreate = iota
	snapApply
	snapDelete
)

var snapActionNames = [...]string{"create", "apply", "delete"}

func (k tkind) String() string { return tkindNames[k] }

// top is one op. Offsets past the current virtual size are skipped (the
// image did not grow) or clipped at execution.
type top struct {
	kind   tkind
	off, n int64
	pat    uint64 // data pattern seed (writes)
	flags  block.Flags
	arg    int     // reopen: option variant; snapshot: which one (apply, delete); shrink, grow: regrowArg
	batch  *tbatch // opBatch
}

func (o top) String() string {
	switch o.kind {
	case opFlush, opCheck:
		return o.kind.String()
	case opReopen:
		return fmt.Sprintf("reopen variant %d", o.arg)
	case opGrow:
		if o.arg == regrowArg {
			return fmt.Sprintf("grow to %d (regrow)", o.off)
		}
		return fmt.Sprintf("grow to %d", o.off)
	case opShrink:
		if o.arg == regrowArg {
			return fmt.Sprintf("shrink to %d (regrow)", o.off)
		}
		return fmt.Sprintf("shrink to %d", o.off)
	case opBatch:
		b := o.batch
		return fmt.Sprintf("batch of %d goroutines, stripe %d over [%#x,+%#x), shared [%#x,+%#x)%v", b.g, b.stripe, b.base, b.span, b.sbase, b.sspan, b.admin)
	case opZero:
		return fmt.Sprintf("zero [%#x,+%#x) %v", o.off, o.n, o.flags)
	case opSnap:
		return fmt.Sprintf("snapshot %s (pick %d)", snapActionNames[o.n], o.arg)
	}
	return fmt.Sprintf("%s [%#x,+%#x)", o.kind, o.off, o.n)
}

// tbatch is a concurrent phase: g goroutines each own the stripes
// k*stripe (k%g == own index) of [base, base+span) and verify their own
// acknowledged writes (read-your-writes); two "dup" goroutines write the
// same items (non-overlapping ranges, identical data) into the shared
// window [sbase, sbase+sspan) in different orders, so they race on the
// same clusters with a deterministic result; readers read across the
// windows' edges and verify the bytes outside them; a flusher flushes.
type tbatch struct {
	g            int
	stripe       int64
	base, span   int64
	sbase, sspan int64
	own          [][]top // per goroutine
	shared       []top   // items the dup goroutines both write
	readers      int
	flushes      int
	seed         uint64
	admin        tbatchAdmin // a resizer and a snapshotter (torture_resize_test.go)
}

// tgen parameters.
type tgenParams struct {
	size     int64 // initial virtual size
	maxSize  int64 // growth limit
	ops      int
	batchOps int // ops per goroutine in a batch
}

// fillPattern fills b with bytes derived from seed (a different stream
// for every seed; not a repeating short pattern).
func fillPattern(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 | 1
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(w[:], x*0x2545f4914f6cdd1d)
		copy(b[i:], w[:])
	}
}

// genLen is a write/zero length: 1 byte to 3 "clusters" of a unit picked
// from 512 B to 2 MiB, so that every cluster size sees sub-cluster,
// cluster-sized and multi-cluster requests.
func genLen(r *rand.Rand) int64 {
	units := []int64{512, 4096, 64 << 10, 2 << 20}
	w := []int{40, 30, 22, 8}
	k := r.IntN(100)
	u := units[len(units)-1]
	for i, p := range w {
		if k < p {
			u = units[i]
			break
		}
		k -= p
	}
	switch r.IntN(8) {
	case 0:
		return 1 + r.Int64N(16) // tiny
	case 1:
		return u // exactly one unit
	}
	return 1 + r.Int64N(3*u)
}

// genOff aligns a random offset in [lo, hi) to any byte, a sector, 4 KiB
// or 64 KiB.
func genAlign(r *rand.Rand, off int64) int64 {
	switch r.IntN(4) {
	case 0:
		return off
	case 1:
		return off &^ 511
	case 2:
		return off &^ 4095
	}
	return off &^ (64<<10 - 1)
}

// genOps generates the op sequence of a seed.
func genOps(seed uint64, p tgenParams) []top {
	r := rand.New(rand.NewPCG(seed, 0x746f7274757265))
	var ops []top
	hot := int64(0) // a hot 2 MiB window: rewrites of allocated clusters
	seq := int64(0) // a sequential stream: fresh allocation, reserve renewals
	size := p.size  // the size the generator assumes (growth may be skipped)
	pickOff := func(n int64) int64 {
		var off int64
		switch k := r.IntN(100); {
		case k < 40:
			off = hot + r.Int64N(2<<20)
		case k < 65:
			off = r.Int64N(p.size)
		case k < 85:
			off = seq
			seq += n
			if seq >= p.size {
				seq = 0
			}
			return off
		default: // the grown area (skipped when the image did not grow)
			if size > p.size {
				off = p.size + r.Int64N(size-p.size)
			} else {
				off = r.Int64N(p.size)
			}
		}
		return genAlign(r, off)
	}
	// Regrow episodes come from a stream of their own, inserted between
	// the ops of r's: a seed's other ops stay as they were.
	rx := rand.New(rand.NewPCG(seed, 0x726567726f77))
	for nmain := 0; nmain < p.ops; {
		if len(ops) > 0 && rx.IntN(60) == 0 {
			ops = append(ops, genRegrow(rx, p, size)...)
		}
		if r.IntN(30) == 0 {
			hot = r.Int64N(p.size-2<<20) &^ 4095
		}
		var o top
		switch k := r.IntN(1000); {
		case k < 420:
			o.kind = opWrite
			o.n = genLen(r)
			o.off = pickOff(o.n)
			o.pat = r.Uint64()
		case k < 500:
			o.kind = opZero
			if r.IntN(3) == 0 {
				// Whole 2 MiB units: whole clusters for every cluster
				// size (zero clusters on v3).
				u := int64(2 << 20)
				o.off = r.Int64N(size/u) * u
				o.n = u * (1 + r.Int64N(2))
			} else {
				o.n = genLen(r)
				o.off = pickOff(o.n)
			}
			if r.IntN(2) == 0 {
				o.flags = block.MayUnmap
			}
		case k < 550:
			o.kind = opDiscard
			if r.IntN(2) == 0 {
				u := int64(2 << 20)
				o.off = r.Int64N(size/u) * u
				o.n = u
			} else {
				o.n = genLen(r)
				o.off = pickOff(o.n)
			}
		case k < 600:
			o.kind = opFlush
		case k < 800:
			o.kind = opRead
			o.n = 1 + r.Int64N(256<<10)
			o.off = pickOff(o.n)
		case k < 815:
			o.kind = opReopen
			o.arg = r.IntN(1 << 20)
		case k < 835:
			if size >= p.maxSize {
				continue
			}
			o.kind = opGrow
			inc := []int64{512, 64 << 10, 1 << 20, 8 << 20}[r.IntN(4)]
			size = min(size+inc*(1+r.Int64N(3)), p.maxSize)
			o.off = size
		case k < 845:
			// Only the grown area goes: the other ops keep to p.size
			// (a regrow episode, genRegrow, cuts below it and grows
			// straight back).
			if size <= p.size {
				continue
			}
			o.kind = opShrink
			size = p.size + r.Int64N(size-p.size+1)&^511
			o.off = size
		case k < 900:
			o.kind = opBatch
			o.batch = genBatch(r, p)
		case k < 925:
			o.kind = opSnap
			o.n = []int64{snapCreate, snapCreate, snapApply, snapDelete}[r.IntN(4)]
			o.arg = r.IntN(1 << 20)
		default:
			o.kind = opCheck
		}
		ops = append(ops, o)
		nmain++
	}
	return ops
}

// genRegrow is a regrow episode at the generator's size: data written
// into the cluster a shrink then cuts into (across the new end, or
// before it only), the shrink (below the initial size too), sometimes a
// reopen or a growth inside that cluster first, the growth back to size
// and reads of the range around the cut (the grown range reads zeros,
// what lies before the cut survives). The size is back where it was
// after it, so the other ops (batches below p.size, snapshots) see the
// size they assume; the model zeroes what the shrink dropped.
func genRegrow(rx *rand.Rand, p tgenParams, size int64) []top {
	var lo int64
	switch rx.IntN(4) {
	case 0: // anywhere, below the backing file's end too
		lo = 64 << 10
	case 1: // below the initial size
		lo = max(64<<10, p.size-8<<20)
	default: // near the end
		lo = max(64<<10, size-4<<20)
	}
	x := (lo + rx.Int64N(size-lo)) &^ 511
	if x%4096 == 0 {
		// Inside a cluster of every size from 4 KiB up (sizes are whole
		// sectors: 512-byte clusters are never cut into).
		x += 512 * (1 + rx.Int64N(7))
	}
	if x >= size {
		return nil
	}
	var ops []top
	before := 1 + rx.Int64N(64<<10) // data before the cut
	after := rx.Int64N(64 << 10)    // and past it (dropped)
	off := max(0, x-before)
	n := min(x+after, size) - off
	if rx.IntN(4) == 0 {
		// Only before the cut, ending at it or short of it.
		n = max(1, x-off-rx.Int64N(4096))
	}
	if n > 0 {
		ops = append(ops, top{kind: opWrite, off: off, n: n, pat: rx.Uint64()})
	}
	if rx.IntN(2) == 0 {
		ops = append(ops, top{kind: opFlush})
	}
	ops = append(ops, top{kind: opShrink, off: x, arg: regrowArg})
	if rx.IntN(4) == 0 {
		ops = append(ops, top{kind: opReopen, arg: rx.IntN(1 << 20)})
	}
	rd := top{kind: opRead, off: max(0, x-4096), n: 4096 + 256<<10}
	if rx.IntN(3) == 0 {
		// A growth inside the cut cluster first (of 4 KiB and up).
		if mid := min(x+512*(1+rx.Int64N(7)), size); mid < size {
			ops = append(ops, top{kind: opGrow, off: mid, arg: regrowArg}, rd)
		}
	}
	return append(ops, top{kind: opGrow, off: size, arg: regrowArg}, rd,
		top{kind: opRead, off: off, n: max(1, min(n, 256<<10))})
}

// regrowArg marks a regrow episode's shrink and growths (genRegrow): the
// runner skips a shrink it could not grow back from.
const regrowArg = 1

func genBatch(r *rand.Rand, p tgenParams) *tbatch {
	b := &tbatch{
		g:       2 + r.IntN(5),
		stripe:  []int64{512, 1536, 4096, 5000, 64 << 10}[r.IntN(5)],
		readers: r.IntN(3),
		flushes: r.IntN(3),
		seed:    r.Uint64(),
	}
	b.admin = genBatchAdmin(b.seed) // from a stream of its own
	b.span = min(int64(1+r.IntN(4))<<20, p.size/4)
	b.span = max(b.span/b.stripe, int64(b.g)) * b.stripe
	half := p.size / 2
	b.base = r.Int64N(half-b.span) &^ 511
	if r.IntN(3) == 0 {
		b.base += int64(r.IntN(512)) // odd alignment
	}
	b.sspan = int64(256<<10) << r.IntN(3)
	b.sbase = half + (r.Int64N(half-b.sspan) &^ 4095)
	nstripes := b.span / b.stripe
	b.own = make([][]top, b.g)
	for g := range b.own {
		mine := (nstripes - int64(g) + int64(b.g) - 1) / int64(b.g)
		for i := 0; i < p.batchOps; i++ {
			s := (r.Int64N(mine)*int64(b.g) + int64(g))
			lo := b.base + s*b.stripe
			off := lo + r.Int64N(b.stripe)
			n := 1 + r.Int64N(lo+b.stripe-off)
			var o top
			switch k := r.IntN(100); {
			case k < 60:
				o = top{kind: opWrite, off: off, n: n, pat: r.Uint64()}
			case k < 85:
				o = top{kind: opRead, off: lo, n: b.stripe}
			case k < 93:
				o = top{kind: opZero, off: off, n: n}
				if r.IntN(2) == 0 {
					o.flags = block.MayUnmap
				}
			default:
				o = top{kind: opDiscard, off: lo, n: b.stripe}
			}
			b.own[g] = append(b.own[g], o)
		}
	}
	// Shared items: non-overlapping ranges in the shared window.
	for pos := b.sbase; pos < b.sbase+b.sspan; {
		n := min(genLen(r)%(64<<10)+1, b.sbase+b.sspan-pos)
		if r.IntN(3) > 0 {
			b.shared = append(b.shared, top{kind: opWrite, off: pos, n: n, pat: r.Uint64()})
		}
		pos += n + r.Int64N(4096)
	}
	return b
}
