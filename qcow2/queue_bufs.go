package qcow2

import "github.com/qring/qring/block"

// RegisterBuffers implements block.BufRegisterer (Q17): bufs are
// registered with the device's queue now, which the fast path's requests
// reach with the caller's buffers as they are, and with the allocator's
// before its next batch. ErrNotSupported when the device's queue cannot
// register buffers.
func (q *Queue) RegisterBuffers(bufs ...[]byte) error {
	if q.closed {
		return block.ErrClosed
	}
	if q.flight != 0 || q.nslow != 0 {
		return block.ErrBusy
	}
	rb, ok := q.inner.(block.BufRegisterer)
	if !ok {
		return block.ErrNotSupported
	}
	err := rb.RegisterBuffers(bufs...)
	if err != nil {
		bufs = nil // the allocator drops the old ones too
	}
	a := &q.alloc
	a.mu.Lock()
	a.bufs, a.bufGen = append([][]byte(nil), bufs...), a.bufGen+1
	a.mu.Unlock()
	return err
}

// registerBufs registers the caller's buffers of this batch on the
// allocator's device queue (its writer only, nothing in flight on it). A
// refusal leaves them unregistered there: an optimisation only.
func (w *allocWriter) registerBufs() {
	w.regd = w.gen
	if rb, ok := w.inner.(block.BufRegisterer); ok && w.inner.InFlight() == 0 {
		_ = rb.RegisterBuffers(w.bufs...)
	}
}
