package block

import (
	"fmt"
	"runtime/debug"
)

// PanicError is a panic in a device method that a queue ran on a
// goroutine of its own (A4), recovered into that request's error: the
// request fails, and the owner, not the process, decides what follows.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("block: panic in a device method: %v", e.Value)
}

// RecoverInto, deferred, turns a panic of the function that deferred it
// into a *PanicError in *err.
func RecoverInto(err *error) {
	if x := recover(); x != nil {
		*err = &PanicError{Value: x, Stack: debug.Stack()}
	}
}
