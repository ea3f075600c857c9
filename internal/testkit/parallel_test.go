package testkit

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestParallel: every worker runs, on its own index, concurrently (a
// barrier that needs all of them passes), and an error one returns is
// the result.
func TestParallel(t *testing.T) {
	const n = 8
	var ran [n]atomic.Bool
	var arrived atomic.Int64
	release := make(chan struct{})
	if err := Parallel(n, func(g int) error {
		ran[g].Store(true)
		if arrived.Add(1) == n {
			close(release)
		}
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for g := range ran {
		if !ran[g].Load() {
			t.Errorf("worker %d did not run", g)
		}
	}
	errA := errors.New("a")
	if err := Parallel(3, func(g int) error {
		if g == 1 {
			return errA
		}
		return nil
	}); err != errA {
		t.Errorf("Parallel returned %v, want %v", err, errA)
	}
}

// TestWithin: a function that returns in time is reported so, one that
// blocks is not.
func TestWithin(t *testing.T) {
	ran := false
	if !Within(time.Minute, func() { ran = true }) || !ran {
		t.Error("Within: a function that returns at once did not finish in time")
	}
	block := make(chan struct{})
	defer close(block)
	if Within(10*time.Millisecond, func() { <-block }) {
		t.Error("Within: a blocked function was reported as finished")
	}
}
