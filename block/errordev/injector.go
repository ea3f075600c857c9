package errordev

import (
	"sync/atomic"
)

// Injector decides whether an op fails. It must be safe for concurrent use.
type Injector interface {
	// MaybeError returns the error op should fail with, or nil.
	MaybeError(op Op, off, n int64) error
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(op Op, off, n int64) error

func (f InjectorFunc) MaybeError(op Op, off, n int64) error { return f(op, off, n) }

// failure is what the counting injectors share: the error they fail an op
// with and how many ops they failed.
type failure struct {
	err   error
	fired atomic.Int64
}

// fire counts one failed op and returns the error to fail it with.
func (f *failure) fire() error {
	f.fired.Add(1)
	return f.err
}

// Fired is how many ops this injector failed.
func (f *failure) Fired() int64 { return f.fired.Load() }

// IndexInjector fails the op with a given index (counting every op it sees
// from 0), and with Sticky every op after it too.
type IndexInjector struct {
	i      int64
	sticky bool
	seen   atomic.Int64
	failure
}

// OnIndex fails the i-th op (from 0) once with err.
func OnIndex(i int64, err error) *IndexInjector {
	return &IndexInjector{i: i, failure: failure{err: err}}
}

// OnIndexSticky fails the i-th op and every later one with err, like a disk
// that has died.
func OnIndexSticky(i int64, err error) *IndexInjector {
	return &IndexInjector{i: i, sticky: true, failure: failure{err: err}}
}

func (x *IndexInjector) MaybeError(op Op, off, n int64) error {
	k := x.seen.Add(1) - 1
	if k == x.i || (x.sticky && k > x.i) {
		return x.fire()
	}
	return nil
}

// OpInjector fails the nth op (from 0) of one kind, once: its Fired is 0
// or 1.
type OpInjector struct {
	op   Op
	nth  int64
	seen atomic.Int64
	failure
}

// OnOp fails the nth (from 0) op of kind op once with err.
func OnOp(op Op, nth int64, err error) *OpInjector {
	return &OpInjector{op: op, nth: nth, failure: failure{err: err}}
}

func (x *OpInjector) MaybeError(op Op, off, n int64) error {
	if op != x.op {
		return nil
	}
	if x.seen.Add(1)-1 == x.nth {
		return x.fire()
	}
	return nil
}

// RandomInjector fails each op with probability p. The decision for the
// k-th op it sees is a pure function of (seed, k), so a single-threaded
// workload replays exactly from its seed.
type RandomInjector struct {
	threshold uint64
	seed      uint64
	seen      atomic.Uint64
	failure
}

// Randomly fails each op with probability p (clamped to [0, 1]).
func Randomly(p float64, seed uint64, err error) *RandomInjector {
	var th uint64
	switch {
	case p >= 1:
		th = ^uint64(0)
	case p > 0:
		th = uint64(p * (1 << 64))
	}
	return &RandomInjector{threshold: th, seed: seed, failure: failure{err: err}}
}

func (x *RandomInjector) MaybeError(op Op, off, n int64) error {
	k := x.seen.Add(1) - 1
	if x.threshold != 0 && splitmix64(x.seed^(k*0x9e3779b97f4a7c15)) <= x.threshold {
		return x.fire()
	}
	return nil
}

func splitmix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Any asks every injector, in order, and returns the first error. All of
// them see every op, so their counters stay aligned with Dev.Ops (E1).
func Any(injs ...Injector) Injector { return anyInjector(injs) }

type anyInjector []Injector

func (a anyInjector) MaybeError(op Op, off, n int64) error {
	var first error
	for _, inj := range a {
		if err := inj.MaybeError(op, off, n); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// OnlyOps restricts inj to ops of the given kinds; other ops are not shown
// to inj at all (so inj's indices count only those kinds).
func OnlyOps(inj Injector, ops ...Op) Injector {
	var mask uint32
	for _, o := range ops {
		mask |= 1 << o
	}
	return InjectorFunc(func(op Op, off, n int64) error {
		if mask&(1<<op) == 0 {
			return nil
		}
		return inj.MaybeError(op, off, n)
	})
}
