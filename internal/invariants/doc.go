// Package invariants gates expensive self-checks behind the invariants
// build tag (after pebble's internal/invariants).
//
// Build with -tags invariants (CI runs -tags invariants -race) and
//
//   - Enabled is true, so callers may run costly consistency checks;
//   - Assertf panics when its condition is false, so a violated engine
//     invariant stops the test at the point it was detected;
//   - Sometimes(pct) returns true about pct% of the time, to force rare
//     paths (cache bypass, eviction, retry) in tests.
//
// Without the tag Enabled is false, Sometimes always returns false, and
// Assertf returns an error (matching ErrAssertion) that the caller passes
// up, so a production build degrades to an I/O error instead of crashing.
//
// The package imports only the standard library.
package invariants

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// ErrAssertion matches every error Assertf returns (errors.Is).
var ErrAssertion = errors.New("invariants: assertion failed")

// AssertionError is a failed assertion: the formatted message, matching
// ErrAssertion under errors.Is.
type AssertionError struct{ Msg string }

func (e *AssertionError) Error() string { return "invariants: assertion failed: " + e.Msg }

// Is makes every AssertionError match ErrAssertion.
func (e *AssertionError) Is(target error) bool { return target == ErrAssertion }

// Assertf returns nil when cond holds. Otherwise it panics with an
// *AssertionError under the invariants tag, and returns that error
// without it. Arguments are formatted only on failure.
func Assertf(cond bool, format string, args ...any) error {
	if cond {
		return nil
	}
	err := &AssertionError{Msg: fmt.Sprintf(format, args...)}
	if Enabled {
		panic(err)
	}
	return err
}

// Sometimes returns true with probability pct/100 when Enabled, and
// always false otherwise. pct <= 0 never fires; pct >= 100 always does
// (under the tag). It is safe for concurrent use.
func Sometimes(pct int) bool {
	if !Enabled || pct <= 0 {
		return false
	}
	return pct >= 100 || rand.IntN(100) < pct
}
