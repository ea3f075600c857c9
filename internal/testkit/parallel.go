package testkit

import "sync"

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
