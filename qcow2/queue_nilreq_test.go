package qcow2

import (
	"testing"
	"time"

	"github.com/qring/qring/block"
)

// TestNilReqSubmit: a qcow2 Queue given a nil request refuses the
// call (block.ErrNilReq) with nothing started. Before the fix it counted
// the batch in flight, panicked on the nil request, and from then on the
// queue's Close waited for ever, and the image refused to close
// (ErrQueueOpen) for good.
func TestNilReqSubmit(t *testing.T) {
	im, _ := testImage(t, CreateOptions{Size: 1 << 20}, Options{})
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Submit(nil) panicked: %v", r)
			}
		}()
		err = q.Submit(&block.Req{Op: block.OpRead, Buf: make([]byte, 512)}, nil)
	}()
	if err == nil {
		t.Errorf("Submit(valid, nil) = nil, want an error (block.ErrNilReq)")
	}
	if n := q.InFlight(); n != 0 {
		t.Errorf("InFlight after a refused Submit = %d, want 0", n)
	}
	done := make(chan error, 1)
	go func() { done <- q.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("queue Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queue Close hangs after Submit(nil)")
	}
	if err := im.Close(); err != nil {
		t.Errorf("image Close: %v", err)
	}
}
