package block_test

import (
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
)

// TestGoQueue: the goroutine queue on memdev keeps the Queue contract.
func TestGoQueue(t *testing.T) {
	blocktest.RunQueue(t, func(t *testing.T) block.Device {
		d := memdev.New(memdev.Options{})
		t.Cleanup(func() { d.Close() })
		return d
	}, blocktest.QueueConfig{})
}
