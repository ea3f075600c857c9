package block

import (
	"fmt"
	"sync/atomic"
)

// ReadOnly is the half of a Device that a device which never writes
// shares with every other (the images of formats qring only reads, vhd
// and vmdk): Writev, WriteZeroes and Truncate fail with ErrReadOnly,
// wrapped with Why, and change nothing; Flush has nothing to do; all of
// them, once Close has run, fail with ErrClosed. A device embeds it,
// checks Closed in its own methods and calls MarkClosed from its Close.
type ReadOnly struct {
	// Why says whose refusal it is ("vpc: ... (qring reads VHD images
	// only)"): the error is "Why: block: device is read-only".
	Why    string
	closed atomic.Bool
}

// Closed reports whether MarkClosed has run.
func (r *ReadOnly) Closed() bool { return r.closed.Load() }

// MarkClosed marks the device closed and reports whether it already was
// (then its Close returns ErrClosed).
func (r *ReadOnly) MarkClosed() (already bool) { return r.closed.Swap(true) }

// Writev implements Device: refused.
func (r *ReadOnly) Writev(int64, [][]byte) error { return r.refuse() }

// WriteZeroes implements Device: refused.
func (r *ReadOnly) WriteZeroes(int64, int64, Flags) error { return r.refuse() }

// Truncate implements Device: refused.
func (r *ReadOnly) Truncate(int64) error { return r.refuse() }

// Flush implements Device: nothing is ever written.
func (r *ReadOnly) Flush() error {
	if r.Closed() {
		return ErrClosed
	}
	return nil
}

func (r *ReadOnly) refuse() error {
	if r.Closed() {
		return ErrClosed
	}
	return fmt.Errorf("%s: %w", r.Why, ErrReadOnly)
}
