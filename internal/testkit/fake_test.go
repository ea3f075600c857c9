package testkit

import (
	"fmt"
	"runtime"
	"testing"
)

// fakeT records what a helper reports instead of failing the real test,
// so the tests below can show a helper failing.
type fakeT struct {
	testing.TB
	name     string
	failed   bool
	errs     []string
	logs     []string
	cleanups []func()
}

func newFakeT(t *testing.T, name string) *fakeT { return &fakeT{TB: t, name: name} }

func (f *fakeT) Helper()                 {}
func (f *fakeT) Name() string            { return f.name }
func (f *fakeT) Failed() bool            { return f.failed }
func (f *fakeT) Cleanup(fn func())       { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Logf(s string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(s, a...)) }
func (f *fakeT) Errorf(s string, a ...any) {
	f.failed = true
	f.errs = append(f.errs, fmt.Sprintf(s, a...))
}
func (f *fakeT) Error(a ...any)            { f.Errorf("%s", fmt.Sprint(a...)) }
func (f *fakeT) Fatalf(s string, a ...any) { f.Errorf(s, a...); runtime.Goexit() }
func (f *fakeT) Fatal(a ...any)            { f.Error(a...); runtime.Goexit() }

// run calls fn(f) on its own goroutine (Fatal ends it with Goexit) and
// then f's cleanups, last first.
func (f *fakeT) run(fn func(*fakeT)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}
