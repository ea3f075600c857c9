package filter

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// QuorumEventKind says what a QuorumEvent reports.
type QuorumEventKind int

const (
	// ChildError: the child failed the request; it was skipped.
	ChildError QuorumEventKind = iota
	// ChildMismatch: the child's read data lost the vote.
	ChildMismatch
	// ChildRewritten: the losing child was rewritten with the winning data
	// (rewrite-corrupted); Err is set if the rewrite failed.
	ChildRewritten
)

var quorumEventNames = [...]string{ChildError: "error", ChildMismatch: "mismatch", ChildRewritten: "rewritten"}

func (k QuorumEventKind) String() string {
	if k >= 0 && int(k) < len(quorumEventNames) {
		return quorumEventNames[k]
	}
	return fmt.Sprintf("QuorumEventKind(%d)", int(k))
}

// QuorumEvent reports a minority child (QEMU's QUORUM_REPORT_BAD).
type QuorumEvent struct {
	Kind     QuorumEventKind
	Child    int
	Off, Len int64
	Op       string // "read", "write", "zero", "flush", "truncate"
	Err      error
}

// QuorumOptions configure a Quorum.
type QuorumOptions struct {
	// Threshold is vote-threshold: how many children must succeed (writes,
	// flush) or return identical data (reads). Default: a majority.
	Threshold int
	// Rewrite is rewrite-corrupted: children whose read data lost the vote
	// are rewritten with the winning data.
	Rewrite bool
	// OnEvent, if set, is called for every minority report. It runs on the
	// request's goroutine and must not call back into the Quorum.
	OnEvent func(QuorumEvent)
}

// QuorumMetrics count minority reports.
type QuorumMetrics struct {
	ChildErrors   atomic.Int64 // failed child requests
	Mismatches    atomic.Int64 // child reads that lost a vote
	Rewrites      atomic.Int64 // successful rewrites of losing children
	RewriteErrors atomic.Int64
}

// Quorum is QEMU's quorum driver: every write goes to all children
// concurrently and succeeds when Threshold of them do; every read reads all
// children and returns the data at least Threshold of them agree on (the
// largest such group). Failed children are reported and skipped.
//
// It is no block.Discarder (FL8): QEMU's quorum driver has no pdiscard (it
// would leave the children reading what each defines, and the next read's
// vote would fail). A discard, direct or queued, is block.ErrNotSupported
// and reaches no child.
type Quorum struct {
	kids []block.Device
	o    QuorumOptions
	lk   rangeLock
	M    QuorumMetrics
}

var _ block.Device = (*Quorum)(nil)

// NewQuorum builds a quorum over children. It owns them (FL4).
func NewQuorum(children []block.Device, o QuorumOptions) (*Quorum, error) {
	if len(children) == 0 {
		return nil, errors.New("filter: quorum needs at least one child")
	}
	if o.Threshold == 0 {
		o.Threshold = len(children)/2 + 1
	}
	if o.Threshold < 1 || o.Threshold > len(children) {
		return nil, fmt.Errorf("filter: quorum vote-threshold %d out of range 1..%d", o.Threshold, len(children))
	}
	return &Quorum{kids: append([]block.Device(nil), children...), o: o}, nil
}

// Children returns the children.
func (q *Quorum) Children() []block.Device { return q.kids }

func (q *Quorum) report(ev QuorumEvent) {
	switch {
	case ev.Kind == ChildError:
		q.M.ChildErrors.Add(1)
	case ev.Kind == ChildMismatch:
		q.M.Mismatches.Add(1)
	case ev.Err != nil:
		q.M.RewriteErrors.Add(1)
	default:
		q.M.Rewrites.Add(1)
	}
	if q.o.OnEvent != nil {
		q.o.OnEvent(ev)
	}
}

// fanout runs op on every child and applies the threshold.
func (q *Quorum) fanout(op string, off, n int64, f func(d block.Device) error) error {
	errs := parallel(len(q.kids), func(i int) error { return f(q.kids[i]) })
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
			continue
		}
		q.report(QuorumEvent{Kind: ChildError, Child: i, Off: off, Len: n, Op: op, Err: err})
	}
	if ok >= q.o.Threshold {
		return nil
	}
	return fmt.Errorf("%w: %s [%d, +%d): %d of %d children succeeded, need %d: %w",
		ErrQuorum, op, off, n, ok, len(q.kids), q.o.Threshold, errors.Join(errs...))
}

func (q *Quorum) Readv(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	defer q.lk.lock(off, n, false)()
	data := make([][]byte, len(q.kids))
	errs := parallel(len(q.kids), func(i int) error {
		data[i] = make([]byte, n)
		return block.ReadAt(q.kids[i], data[i], off)
	})
	// Vote: group identical results, keep the largest group.
	group := make([]int, len(q.kids)) // index of the group's first member, -1 failed
	count := make([]int, len(q.kids))
	win := -1
	for i, err := range errs {
		if err != nil {
			group[i] = -1
			q.report(QuorumEvent{Kind: ChildError, Child: i, Off: off, Len: n, Op: "read", Err: err})
			continue
		}
		group[i] = i
		for j := 0; j < i; j++ {
			if group[j] == j && bytes.Equal(data[i], data[j]) {
				group[i] = j
				break
			}
		}
		g := group[i]
		count[g]++
		if win < 0 || count[g] > count[win] {
			win = g
		}
	}
	if win < 0 || count[win] < q.o.Threshold {
		c := 0
		if win >= 0 {
			c = count[win]
		}
		return fmt.Errorf("%w: read [%d, +%d): at most %d of %d children agree, need %d: %w",
			ErrQuorum, off, n, c, len(q.kids), q.o.Threshold, errors.Join(errs...))
	}
	scatter(bufs, data[win])
	for i, g := range group {
		if g < 0 || g == win {
			continue
		}
		q.report(QuorumEvent{Kind: ChildMismatch, Child: i, Off: off, Len: n, Op: "read"})
		if q.o.Rewrite {
			// The shared lock we hold keeps guest writes to this range
			// out, so the rewrite cannot overwrite newer data (FL5).
			err := block.WriteAt(q.kids[i], data[win], off)
			q.report(QuorumEvent{Kind: ChildRewritten, Child: i, Off: off, Len: n, Op: "read", Err: err})
		}
	}
	return nil
}

func (q *Quorum) Writev(off int64, bufs [][]byte) error {
	return q.lk.writev(off, bufs, func(n int64) error {
		return q.fanout("write", off, n, func(d block.Device) error { return d.Writev(off, bufs) })
	})
}

func (q *Quorum) WriteZeroes(off, n int64, flags block.Flags) error {
	return q.lk.writeZeroes(q.Caps(), off, n, flags, func() error {
		return q.fanout("zero", off, n, func(d block.Device) error { return d.WriteZeroes(off, n, flags) })
	})
}

func (q *Quorum) Flush() error {
	return q.fanout("flush", 0, 0, block.Device.Flush)
}

func (q *Quorum) Truncate(size int64) error {
	return q.fanout("truncate", size, 0, func(d block.Device) error { return d.Truncate(size) })
}

// Size is the first child's that answers.
func (q *Quorum) Size() (int64, error) {
	var errs []error
	for _, k := range q.kids {
		n, err := k.Size()
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
	}
	return 0, errors.Join(errs...)
}

// Caps: every child receives every request (FL1).
func (q *Quorum) Caps() block.Caps { return CapsOf(q.kids...) }

func (q *Quorum) Close() error {
	var errs []error
	for _, k := range q.kids {
		errs = append(errs, k.Close())
	}
	return errors.Join(errs...)
}
