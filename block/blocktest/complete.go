package blocktest

import (
	"testing"

	"github.com/qring/qring/block"
)

// MustComplete submits reqs to q in one Submit, waits until every one of
// them has completed and fails t on a Submit or Wait error or on any
// request's own error. Nothing else may be in flight on q.
func MustComplete(t testing.TB, q block.Queue, reqs ...*block.Req) {
	t.Helper()
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, len(reqs))
	for n := 0; n < len(reqs); {
		k, err := q.Wait(out[n:], len(reqs)-n)
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	for _, r := range reqs {
		if r.Err != nil {
			t.Fatalf("%v at %#x: %v", r.Op, r.Off, r.Err)
		}
	}
}
