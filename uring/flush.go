package uring

import (
	"fmt"

	"github.com/qring/qring/block"
)

// Flush implements block.Device: fdatasync (IORING_FSYNC_DATASYNC). After
// a failed fdatasync it fails without asking the kernel again (U14).
func (f *File) Flush() error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	return f.flush()
}

// flush is Flush on a File entered, or held open by a queue (U12). One
// fdatasync at a time (U14): the kernel reports a write-back error to
// one of several concurrent calls, and the others would succeed before
// the failure is recorded.
func (f *File) flush() error {
	if f.readOnly || f.noFlush {
		return nil
	}
	f.flushMu.Lock()
	defer f.flushMu.Unlock()
	if err := f.flushLost(); err != nil {
		return err
	}
	f.m.fsyncs.Add(1)
	err := f.io.fdatasync()
	if err != nil && err != block.ErrClosed {
		return f.flushFailed(err)
	}
	return err
}

// flushFailed records a failed fdatasync, the first one kept (U14), and
// returns the error for the request that saw it. Called with flushMu
// held.
func (f *File) flushFailed(errno error) error {
	f.lostFlush.CompareAndSwap(nil, &errno)
	return &block.OpError{Op: "flush", Err: errno}
}

// flushLost is the error every flush gets once one has failed (U14), or
// nil.
func (f *File) flushLost() error {
	first := f.lostFlush.Load()
	if first == nil {
		return nil
	}
	return &block.OpError{Op: "flush", Err: fmt.Errorf("%w (first failure: %w)", block.ErrFlushFailed, *first)}
}
