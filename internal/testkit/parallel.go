package testkit

import (
	"sync"
	"time"
)

// Parallel runs fn(0), …, fn(n-1) on n goroutines, waits for all of them
// and returns the first error one of them returned (in the order they
// returned), or nil. It does not touch a testing.TB, so a worker may
// not call t.Fatal; the caller fails the test with the error.
func Parallel(n int, fn func(g int) error) error {
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			if err := fn(g); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Within runs fn on its own goroutine and reports whether it returned
// within d; if not, fn keeps running and the caller fails the test (a
// hang: a deadlock, a missed wake-up).
func Within(d time.Duration, fn func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
