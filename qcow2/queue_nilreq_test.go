package qcow2

import (
	"testing"

	"github.com/qring/qring/block/blocktest"
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
	blocktest.CheckNilSubmit(t, q)
	if err := im.Close(); err != nil {
		t.Errorf("image Close: %v", err)
	}
}
