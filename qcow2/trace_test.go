package qcow2

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/block/tracedev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Golden I/O-order traces (as the golden files of cockroachdb/pebble's
// data-driven tests, e.g. its testdata/checkpoint):
// each scenario runs one operation on a memdev under tracedev and the op
// sequence, annotated with the role of every written cluster, is compared
// with qcow2/testdata/traces/<scenario>.txt. A reordering of metadata
// writes shows up as a diff; `go test ./qcow2 -run TestTrace -rewrite`
// regenerates the files. The ordering rules (Q1..Q5) are also asserted on
// the op list itself, so a -rewrite cannot silently bless a violation.

var rewriteFlag = flag.Bool("rewrite", false, "rewrite golden files under testdata (TestTrace)")

// traceOp is one traced op with the role of the bytes it touched.
type traceOp struct {
	e    tracedev.Entry
	role string // header, reftable, l1, refblock, l2, data (writes/zeroes); "" for flush
	c    int64  // first cluster
	line string
}

func (o traceOp) isWrite(role string) bool {
	return o.e.Kind == tracedev.Write && o.role == role
}

// traceRig is an image on a traced memdev.
type traceRig struct {
	t    *testing.T
	mem  *memdev.Dev
	tr   *tracedev.Dev
	im   *Image
	cs   int64
	init *format.Header // header before the traced part
	// initL2/initRB: L2 tables and refblocks (clusters) before the traced
	// part; tables not in them are new.
	initL2, initRB map[int64]bool
	m0             Metrics // metrics at start
}

// delta returns the engine metrics since start.
func (r *traceRig) delta() Metrics { return r.im.Metrics().Sub(r.m0) }

func newTraceRig(t *testing.T, co CreateOptions, o Options, mo memdev.Options) *traceRig {
	t.Helper()
	mem := memdev.New(mo)
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	cs := int64(co.ClusterSize)
	if cs == 0 {
		cs = 64 << 10
	}
	tr := tracedev.New(mem, tracedev.Options{OmitReads: true, ClusterSize: cs})
	im, err := OpenDevice(tr, o)
	if err != nil {
		t.Fatal(err)
	}
	r := &traceRig{t: t, mem: mem, tr: tr, im: im, cs: cs}
	t.Cleanup(func() { im.Close() })
	return r
}

// start ends the setup: flushes, snapshots the layout and clears the log.
func (r *traceRig) start() {
	r.t.Helper()
	if err := r.im.Flush(); err != nil {
		r.t.Fatal(err)
	}
	r.init, r.initL2, r.initRB = r.layout()
	r.m0 = r.im.Metrics()
	r.tr.Reset()
}

// layout decodes the on-device header, L1 and refcount table.
func (r *traceRig) layout() (*format.Header, map[int64]bool, map[int64]bool) {
	h, l2, rb, _ := r.layoutData()
	return h, l2, rb
}

// layoutData also returns the data clusters the L2 tables point at.
func (r *traceRig) layoutData() (*format.Header, map[int64]bool, map[int64]bool, map[int64]bool) {
	r.t.Helper()
	b := r.mem.Bytes()
	h, err := format.ParseHeader(b[:min(len(b), 2<<20)])
	if err != nil {
		r.t.Fatal(err)
	}
	l2, rb := map[int64]bool{}, map[int64]bool{}
	for i := uint64(0); i < uint64(h.L1Size); i++ {
		e := format.L1At(b[h.L1TableOffset:], i)
		if e.Offset() != 0 {
			l2[int64(e.Offset())/r.cs] = true
		}
	}
	for i := uint64(0); i < uint64(h.RefcountTableClusters)*uint64(r.cs)/8; i++ {
		if v := format.ReftableAt(b[h.RefcountTableOffset:], i); v != 0 {
			rb[int64(v)/r.cs] = true
		}
	}
	data := map[int64]bool{}
	for c := range l2 {
		for i := int64(0); i < r.cs/8; i++ {
			e := format.L2At(b[c*r.cs:], uint64(i))
			if off := int64(e.Offset()); off != 0 && e.Type() != format.ClusterCompressed {
				data[off/r.cs] = true
			}
		}
	}
	return h, l2, rb, data
}

// ops classifies the log against the final layout (and the initial one,
// for tables that moved).
func (r *traceRig) ops() []traceOp {
	r.t.Helper()
	h, l2, rb, data := r.layoutData()
	in := func(off int64, t format.HostOff, n int64) bool {
		return off >= int64(t) && off < int64(t)+n
	}
	var out []traceOp
	for _, e := range r.tr.Entries() {
		o := traceOp{e: e, c: e.Off / r.cs, line: r.tr.Format(e)}
		if e.Kind == tracedev.Write || e.Kind == tracedev.Zero {
			c := e.Off / r.cs
			switch {
			case data[c]: // e.g. a freed table's cluster reused for data
				o.role = "data"
			case e.Off < r.cs:
				o.role = "header"
			case in(e.Off, h.RefcountTableOffset, int64(h.RefcountTableClusters)*r.cs),
				in(e.Off, r.init.RefcountTableOffset, int64(r.init.RefcountTableClusters)*r.cs):
				o.role = "reftable"
			case in(e.Off, h.L1TableOffset, int64(h.L1Size)*8):
				o.role = "l1"
			case rb[c] || r.initRB[c]:
				o.role = "refblock"
			case l2[c] || r.initL2[c]:
				o.role = "l2"
			default:
				o.role = "data"
			}
			o.line += " [" + o.role + "]"
		}
		out = append(out, o)
	}
	return out
}

// flushBetween reports whether a flush lies strictly between i and j.
func flushBetween(ops []traceOp, i, j int) bool {
	for k := i + 1; k < j; k++ {
		if ops[k].e.Kind == tracedev.Flush {
			return true
		}
	}
	return false
}

func lastBefore(ops []traceOp, j int, pred func(traceOp) bool) int {
	for k := j - 1; k >= 0; k-- {
		if pred(ops[k]) {
			return k
		}
	}
	return -1
}

func dump(ops []traceOp) string {
	var sb strings.Builder
	for i, o := range ops {
		fmt.Fprintf(&sb, "%3d %s\n", i, o.line)
	}
	return sb.String()
}

// checkOrderRules asserts the ordering invariants on any trace:
//
//	Q1     no refblock write and L2 write share a flush epoch with the
//	       refblock first, and a new L2 table's first write follows a
//	       refblock write and a flush (its own refcount is durable);
//	Q3     no L2 write and refblock write share a flush epoch with the L2
//	       write first (decrements wait for the L2 change);
//	Q4     every L1 entry write follows an L2 table write and a flush;
//	       every refcount table write that is an entry update follows a
//	       refblock write and a flush; a header write after a new
//	       refcount table follows the table write and a flush;
//	Q5     a zeroing of a cluster completes before any data write into it.
func (r *traceRig) checkOrderRules(ops []traceOp) {
	t := r.t
	t.Helper()
	seenL2 := map[int64]bool{}
	zeroed := map[int64]int{}
	for j, o := range ops {
		switch {
		case o.isWrite("l2"):
			if k := lastBefore(ops, j, func(p traceOp) bool { return p.isWrite("refblock") }); k >= 0 && !flushBetween(ops, k, j) {
				t.Errorf("Q1: L2 write #%d follows refblock write #%d without a flush\n%s", j, k, dump(ops))
			}
			if !seenL2[o.c] && !r.initL2[o.c] {
				if k := lastBefore(ops, j, func(p traceOp) bool { return p.isWrite("refblock") }); k < 0 {
					t.Errorf("Q1: first write #%d of new L2 table c%d has no refblock write before it\n%s", j, o.c, dump(ops))
				}
			}
			seenL2[o.c] = true
		case o.isWrite("refblock"):
			if k := lastBefore(ops, j, func(p traceOp) bool { return p.isWrite("l2") }); k >= 0 && !flushBetween(ops, k, j) {
				t.Errorf("Q3: refblock write #%d follows L2 write #%d without a flush\n%s", j, k, dump(ops))
			}
		case o.isWrite("l1"):
			k := lastBefore(ops, j, func(p traceOp) bool { return p.isWrite("l2") })
			if k < 0 || !flushBetween(ops, k, j) {
				t.Errorf("Q4: L1 write #%d not preceded by an L2 table write (#%d) and a flush\n%s", j, k, dump(ops))
			}
		case o.isWrite("reftable") && o.e.Len < r.cs:
			k := lastBefore(ops, j, func(p traceOp) bool { return p.isWrite("refblock") })
			if k < 0 || !flushBetween(ops, k, j) {
				t.Errorf("Q4: refcount table entry write #%d not preceded by a refblock write (#%d) and a flush\n%s", j, k, dump(ops))
			}
		case o.isWrite("header"):
			if k := lastBefore(ops, j, func(p traceOp) bool { return p.isWrite("reftable") && p.e.Len >= r.cs }); k >= 0 && !flushBetween(ops, k, j) {
				t.Errorf("Q4: header write #%d follows new refcount table write #%d without a flush\n%s", j, k, dump(ops))
			}
		case o.e.Kind == tracedev.Zero && o.role == "data":
			for c := o.e.Off / r.cs; c < (o.e.Off+o.e.Len+r.cs-1)/r.cs; c++ {
				zeroed[c] = j
			}
		case o.isWrite("data"):
			for c := o.e.Off / r.cs; c < (o.e.Off+o.e.Len+r.cs-1)/r.cs; c++ {
				// A later zeroing of the same cluster would wipe the data.
				for k := j + 1; k < len(ops); k++ {
					p := ops[k]
					if p.e.Kind == tracedev.Zero && p.role == "data" && p.e.Off/r.cs <= c && c < (p.e.Off+p.e.Len+r.cs-1)/r.cs {
						t.Errorf("Q5: zeroing #%d of c%d after data write #%d\n%s", k, c, j, dump(ops))
					}
				}
			}
		}
	}
}

// checkCOWBeforeLink asserts Q2 for a trace whose data writes filled
// bytes around the guest data in reused (non-fresh) or copied space:
// each such data (or zeroing) op is followed by a flush before the next
// L2 write.
func (r *traceRig) checkCOWBeforeLink(ops []traceOp) {
	r.t.Helper()
	for j, o := range ops {
		if !o.isWrite("l2") {
			continue
		}
		k := lastBefore(ops, j, func(p traceOp) bool {
			return p.role == "data" && (p.e.Kind == tracedev.Write || p.e.Kind == tracedev.Zero)
		})
		if k >= 0 && !flushBetween(ops, k, j) {
			r.t.Errorf("Q2: L2 write #%d follows COW/zeroing data op #%d without a flush\n%s", j, k, dump(ops))
		}
	}
}

func (r *traceRig) golden(name, comment string, ops []traceOp) {
	t := r.t
	t.Helper()
	var sb strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(comment), "\n") {
		sb.WriteString("# " + strings.TrimSpace(l) + "\n")
	}
	for _, o := range ops {
		sb.WriteString(o.line + "\n")
	}
	got := sb.String()
	path := filepath.Join("testdata", "traces", name+".txt")
	if *rewriteFlag {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -rewrite to create it)", err)
	}
	if string(want) != got {
		t.Errorf("trace %s differs from %s (rerun with -rewrite if intended):\n%s", name, path, lineDiff(string(want), got))
	}
}

// lineDiff is a small line diff: common prefix and suffix elided.
func lineDiff(want, got string) string {
	w := strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	g := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	p := 0
	for p < len(w) && p < len(g) && w[p] == g[p] {
		p++
	}
	s := 0
	for s < len(w)-p && s < len(g)-p && w[len(w)-1-s] == g[len(g)-1-s] {
		s++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "@@ line %d @@\n", p+1)
	for _, l := range w[p : len(w)-s] {
		sb.WriteString("- " + l + "\n")
	}
	for _, l := range g[p : len(g)-s] {
		sb.WriteString("+ " + l + "\n")
	}
	return sb.String()
}

func (r *traceRig) write(off int64, data []byte) {
	r.t.Helper()
	if _, err := r.im.WriteAt(data, off); err != nil {
		r.t.Fatalf("write at %d: %v", off, err)
	}
}

func (r *traceRig) flush() {
	r.t.Helper()
	if err := r.im.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *traceRig) check() {
	r.t.Helper()
	res, err := r.im.Check(CheckOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	if !res.Clean() {
		r.t.Fatalf("check: %d corruptions %d leaks: %v", res.Corruptions, res.Leaks, head(res.Messages, 10))
	}
}

// fillUntil writes piece-sized chunks from *off on (flushing after each)
// until grew reports a change; the log then holds exactly the write that
// caused it and the following Flush.
func (r *traceRig) fillUntil(off *int64, piece int64, grew func(before, after Metrics) bool) {
	r.t.Helper()
	r.m0 = r.im.Metrics()
	size, _ := r.im.Size()
	for ; *off+piece <= size; *off += piece {
		r.tr.Reset()
		before := r.im.Metrics()
		r.m0 = before
		r.write(*off, pattern(int(piece), byte(*off/piece)))
		if grew(before, r.im.Metrics()) {
			r.init, r.initL2, r.initRB = r.layoutBefore()
			r.flush()
			*off += piece
			return
		}
		r.flush()
	}
	r.t.Fatal("fillUntil: image full before the event")
}

// layoutBefore is the layout as of the last Reset: tables allocated by
// the traced write are "new" only if they are absent from it. The device
// already holds the write's effects, so rebuild it from the ops: new
// tables are those first written in the log.
func (r *traceRig) layoutBefore() (*format.Header, map[int64]bool, map[int64]bool) {
	h, l2, rb := r.layout()
	for _, e := range r.tr.Entries() {
		if e.Kind == tracedev.Write {
			delete(l2, e.Off/r.cs)
			delete(rb, e.Off/r.cs)
		}
	}
	// Keep the header as it was before a refcount table move, if any.
	if r.init != nil {
		for _, e := range r.tr.Entries() {
			if e.Kind == tracedev.Write && e.Off < r.cs {
				return r.init, l2, rb
			}
		}
	}
	return h, l2, rb
}

// atMostOneZeroing: one new data cluster got at most one zeroing op,
// covering exactly that cluster, and no zero-buffer data write.
func atMostOneZeroing(t *testing.T, r *traceRig, ops []traceOp) {
	t.Helper()
	nz := 0
	for _, o := range ops {
		if o.role != "data" {
			continue
		}
		if o.e.Kind == tracedev.Write && o.e.Zeros {
			t.Errorf("zero-buffer write %s", o.line)
		}
		if o.e.Kind == tracedev.Zero {
			nz++
			if o.e.Len != r.cs || o.e.Off%r.cs != 0 {
				t.Errorf("zeroing %s is not exactly one cluster", o.line)
			}
		}
	}
	if nz > 1 {
		t.Errorf("%d zeroing ops for one new cluster", nz)
	}
	if m := r.delta(); m.ZeroPadBytes != 0 {
		t.Errorf("ZeroPadBytes %d, want 0", m.ZeroPadBytes)
	}
}

// TestTrace pins the device op order of allocation, COW, freeing, L2 and
// refcount-block allocation, refcount-table growth and flushing.
func TestTrace(t *testing.T) {
	const ki = 1 << 10
	const mi = 1 << 20
	noAhead := Options{PreallocSize: -1}
	type scenario struct {
		name    string
		comment string
		run     func(t *testing.T) (*traceRig, []traceOp)
		// q2: the traced data ops wrote bytes around guest data into
		// copied or reused space: they must be flushed before the link.
		q2 bool
		// check extra scenario-specific expectations.
		extra func(t *testing.T, r *traceRig, ops []traceOp)
	}
	count := func(ops []traceOp, pred func(traceOp) bool) int {
		n := 0
		for _, o := range ops {
			if pred(o) {
				n++
			}
		}
		return n
	}
	scenarios := []scenario{
		{
			name: "alloc",
			comment: `alloc: fresh 64 MiB image (64 KiB clusters, prealloc=on, no preallocate-ahead): 4 KiB write at 0, then Flush.
Q1: new L2 cluster's refblock write, flush, then L2 table write; Q4: L2 table, flush, then L1 entry.
Past EOF without reserved space: at most one Allocate zeroing of the new cluster, completed before the
4 KiB of guest data (Q5), never zero buffers; at Flush: refblock (data +1), flush, L2 entry, flush (Q1, Q2).`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 64 * mi}, noAhead, memdev.Options{})
				r.start()
				r.write(0, pattern(4*ki, 1))
				r.flush()
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				atMostOneZeroing(t, r, ops)
			},
		},
		{
			name: "alloc-ahead",
			comment: `alloc-ahead: as alloc, with preallocate-ahead on (default PreallocSize): the first
allocation reserves space past EOF with one Allocate zeroing before the data write, from the old end of
the file (the range being taken included) to a 1 MiB boundary, then gives the holes below the next
1 MiB boundary back (MayUnmap): the reserve proper starts there, and took their space only to leave it.
Rules as alloc; those two are the only zeroing ops.`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 64 * mi}, Options{}, memdev.Options{})
				r.start()
				r.write(0, pattern(4*ki, 1))
				r.flush()
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				if n := count(ops, func(o traceOp) bool { return o.e.Kind == tracedev.Zero }); n != 2 {
					t.Errorf("want exactly one reservation zeroing and one give-back, got %d zeroings", n)
				}
				if n := count(ops, func(o traceOp) bool { return o.e.Kind == tracedev.Zero && o.e.Flags == block.MayUnmap }); n != 1 {
					t.Errorf("want the holes below the reserve given back once (MayUnmap), got %d", n)
				}
				if m := r.delta(); m.Reservations != 1 || m.Fallocates != 0 {
					t.Errorf("metrics: %v", m)
				}
			},
		},
		{
			name: "cow-backing",
			comment: `cow-backing: 64 KiB clusters over a 1 MiB raw backing memdev with data: 4 KiB write at 68 KiB
(inside guest cluster 1), then Flush. The L2 table exists (cluster 0 written and flushed first).
COW: one data write of the whole new cluster (backing head + guest data + backing tail);
Q2: that write, a flush, then the L2 entry; Q1: refblock, flush, L2.`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				bd := make([]byte, mi)
				for i := range bd {
					bd[i] = byte(i>>16) ^ 0x5a
				}
				o := noAhead
				o.Backing = memdev.FromBytes(bd, memdev.Options{})
				r := newTraceRig(t, CreateOptions{Size: 64 * mi, BackingFile: "backing.raw", BackingFormat: "raw"}, o, memdev.Options{})
				r.write(0, pattern(64*ki, 2))
				r.start()
				r.write(68*ki, pattern(4*ki, 3))
				r.flush()
				got := make([]byte, 64*ki)
				if _, err := r.im.ReadAt(got, 64*ki); err != nil {
					t.Fatal(err)
				}
				want := append([]byte(nil), bd[64*ki:128*ki]...)
				copy(want[4*ki:], pattern(4*ki, 3))
				testkit.MustEqual(t, got, want, "COW cluster")
				return r, r.ops()
			},
			q2: true,
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				if m := r.delta(); m.COWBytes != 60*ki {
					t.Errorf("COWBytes %d, want %d", m.COWBytes, 60*ki)
				}
			},
		},
		{
			name: "free",
			comment: `free: 64 KiB clusters, no backing: clusters 0 and 1 written and flushed, then Discard of cluster 1 and Flush.
The L2 entry becomes a zero cluster; Q3: the L2 write, a flush, then the refblock decrement. Q21: the freed
host cluster is punched (zero MayUnmap) once the L2 change is durable, before its refcount drops.`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 64 * mi}, noAhead, memdev.Options{})
				r.write(0, pattern(128*ki, 4))
				r.start()
				if err := r.im.Discard(64*ki, 64*ki); err != nil {
					t.Fatal(err)
				}
				r.flush()
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				l2 := lastBefore(ops, len(ops), func(o traceOp) bool { return o.isWrite("l2") })
				rb := lastBefore(ops, len(ops), func(o traceOp) bool { return o.isWrite("refblock") })
				if l2 < 0 || rb < 0 || rb < l2 || !flushBetween(ops, l2, rb) {
					t.Errorf("Q3: want L2 write, flush, refblock write; got L2 #%d refblock #%d\n%s", l2, rb, dump(ops))
				}
				punch := lastBefore(ops, len(ops), func(o traceOp) bool {
					return o.e.Kind == tracedev.Zero && o.role == "data" && o.e.Flags&block.MayUnmap != 0
				})
				if punch < l2 || punch > rb || !flushBetween(ops, l2, punch) {
					t.Errorf("Q21: want the freed cluster punched after the L2 write and a flush, and before the refblock write; got punch #%d L2 #%d refblock #%d\n%s", punch, l2, rb, dump(ops))
				}
			},
		},
		{
			name: "reuse-freed",
			comment: `reuse-freed: as free, then a 4 KiB write at 68 KiB into the discarded cluster and Flush (prealloc=on).
The freed host cluster is reused: not fresh, so one Allocate zeroing of the whole cluster completes
before the data write (Q5), and that zeroing is flushed before the L2 entry points at it (Q2).`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 64 * mi}, noAhead, memdev.Options{})
				r.write(0, pattern(128*ki, 4))
				r.flush()
				if err := r.im.Discard(64*ki, 64*ki); err != nil {
					t.Fatal(err)
				}
				r.start()
				r.write(68*ki, pattern(4*ki, 5))
				r.flush()
				got := make([]byte, 64*ki)
				if _, err := r.im.ReadAt(got, 64*ki); err != nil {
					t.Fatal(err)
				}
				want := make([]byte, 64*ki)
				copy(want[4*ki:], pattern(4*ki, 5))
				testkit.MustEqual(t, got, want, "reused cluster")
				return r, r.ops()
			},
			q2: true,
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				if n := count(ops, func(o traceOp) bool { return o.e.Kind == tracedev.Zero }); n != 1 {
					t.Errorf("want one zeroing of the reused cluster, got %d", n)
				}
				if n := count(ops, func(o traceOp) bool { return o.e.Zeros }); n != 0 {
					t.Errorf("zero buffers written (%d ops)", n)
				}
			},
		},
		{
			name: "new-l2",
			comment: `new-l2: 1 GiB image, 64 KiB clusters: cluster 0 written and flushed, then a 4 KiB write at 600 MiB
(L1 index 1) and Flush. Q1: the refblock counting the new L2 cluster is written and flushed first;
Q4: the zeroed L2 table, a flush, then the 8-byte L1 entry.`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 1 << 30}, noAhead, memdev.Options{})
				r.write(0, pattern(4*ki, 6))
				r.start()
				r.write(600*mi, pattern(4*ki, 7))
				r.flush()
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				if n := count(ops, func(o traceOp) bool { return o.isWrite("l1") }); n != 1 {
					t.Errorf("want one L1 write, got %d", n)
				}
				if m := r.delta(); m.L2TablesAllocated != 1 {
					t.Errorf("L2TablesAllocated %d", m.L2TablesAllocated)
				}
				atMostOneZeroing(t, r, ops)
			},
		},
		{
			name: "new-refblock",
			comment: `new-refblock: 512-byte clusters, refcount_bits 64 (64 clusters per refblock): 512-byte writes, each
flushed, until one needs a new refcount block; the trace is that write and its Flush.
Q4: the new refblock is written and flushed before the refcount table entry; Q1 as alloc.`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 8 * mi, ClusterSize: 512, RefcountBits: 64}, noAhead, memdev.Options{})
				r.start()
				off := int64(0)
				r.fillUntil(&off, 512, func(b, a Metrics) bool { return a.RefblocksAllocated > b.RefblocksAllocated })
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				if n := count(ops, func(o traceOp) bool { return o.isWrite("reftable") }); n != 1 {
					t.Errorf("want one refcount table entry write, got %d", n)
				}
			},
		},
		{
			name: "grow-reftable",
			comment: `grow-reftable: 512-byte clusters, refcount_bits 64 (the one-cluster refcount table covers 2 MiB):
writes until the host file passes 2 MiB; the trace is the write that grows the table and its Flush.
Q4: new refblocks and the new table are written and flushed before the header points at them;
the old table is freed only after the header write is flushed (Q3).`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 8 * mi, ClusterSize: 512, RefcountBits: 64}, noAhead, memdev.Options{})
				// Bulk fill to just below 2 MiB of host space, then step.
				for off := int64(0); ; off += 16 * ki {
					if sz, _ := r.mem.Size(); sz >= 2*mi-48*ki {
						break
					}
					r.write(off, pattern(16*ki, byte(off>>14)))
				}
				r.start()
				sz, _ := r.mem.Size()
				off := (sz + 64*ki) / 16 / ki * 16 * ki // guest space not written yet
				r.fillUntil(&off, 512, func(b, a Metrics) bool { return a.ReftableGrowths > b.ReftableGrowths })
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				hw := lastBefore(ops, len(ops), func(o traceOp) bool { return o.isWrite("header") })
				tw := lastBefore(ops, len(ops), func(o traceOp) bool { return o.isWrite("reftable") && o.e.Len >= r.cs })
				if hw < 0 || tw < 0 || tw > hw || !flushBetween(ops, tw, hw) {
					t.Errorf("Q4: want new refcount table, flush, header; got table #%d header #%d\n%s", tw, hw, dump(ops))
				}
				if rb := lastBefore(ops, len(ops), func(o traceOp) bool { return o.isWrite("refblock") }); rb < hw || !flushBetween(ops, hw, rb) {
					t.Errorf("Q3: the old table's refcount drops only after the header write is flushed: header #%d refblock #%d\n%s", hw, rb, dump(ops))
				}
				if m := r.delta(); m.ReftableGrowths != 1 {
					t.Errorf("ReftableGrowths %d", m.ReftableGrowths)
				}
			},
		},
		{
			name: "flush",
			comment: `flush: 64 KiB clusters: cluster 0 written and flushed, then (untraced) an overwrite of cluster 0 and
new allocations in clusters 2 and 5 of the same L2 table; the trace is the Flush alone.
Q1: dirty refblock, flush, dirty L2 slice, flush; overwrites add no metadata.`,
			run: func(t *testing.T) (*traceRig, []traceOp) {
				r := newTraceRig(t, CreateOptions{Size: 64 * mi}, noAhead, memdev.Options{})
				r.write(0, pattern(64*ki, 8))
				r.flush()
				r.write(4*ki, pattern(4*ki, 9))
				r.write(128*ki, pattern(64*ki, 10))
				r.write(5*64*ki+512, pattern(512, 11))
				r.init, r.initL2, r.initRB = r.layout()
				r.tr.Reset()
				r.flush()
				return r, r.ops()
			},
			extra: func(t *testing.T, r *traceRig, ops []traceOp) {
				if n := count(ops, func(o traceOp) bool { return o.role == "data" }); n != 0 {
					t.Errorf("Flush wrote data (%d ops)", n)
				}
				if len(ops) == 0 || ops[len(ops)-1].e.Kind != tracedev.Flush {
					t.Errorf("Flush does not end with a device flush\n%s", dump(ops))
				}
			},
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			r, ops := sc.run(t)
			r.checkOrderRules(ops)
			if sc.q2 {
				r.checkCOWBeforeLink(ops)
			}
			if sc.extra != nil {
				sc.extra(t, r, ops)
			}
			r.golden(sc.name, sc.comment, ops)
			r.check()
		})
	}
}
