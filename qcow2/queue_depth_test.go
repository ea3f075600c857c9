package qcow2

import (
	"errors"
	"testing"

	"github.com/qring/qring/block"
)

// TestNewQueue_DepthBound: a queue deeper than block.MaxQueueDepth is
// refused (block.ErrRange) before anything is allocated; before the
// bound, NewQueue(1<<30) allocated its slots at once and the process
// died out of memory (a runtime fatal error, past any recover).
func TestNewQueue_DepthBound(t *testing.T) {
	im, _ := testImage(t, CreateOptions{Size: 1 << 20}, Options{})
	for _, d := range []int{0, -1, block.MaxQueueDepth + 1, 1 << 30} {
		if q, err := im.NewQueue(d); !errors.Is(err, block.ErrRange) || q != nil {
			t.Errorf("NewQueue(%d): %v, %v", d, q, err)
		}
		if _, err := block.NewGoQueue(im, d); !errors.Is(err, block.ErrRange) {
			t.Errorf("NewGoQueue(%d): %v", d, err)
		}
	}
	q, err := im.NewQueue(block.MaxQueueDepth)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}
