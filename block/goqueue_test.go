package block_test

import (
	"errors"
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

// flushPanicDev panics in Flush.
type flushPanicDev struct{ *memdev.Dev }

func (flushPanicDev) Flush() error { panic("flush boom") }

// TestGoQueuePanic: a panic in a device method fails that request with a
// *PanicError (A4) instead of ending the process; the queue goes on.
func TestGoQueuePanic(t *testing.T) {
	q, err := block.NewGoQueue(flushPanicDev{memdev.New(memdev.Options{})}, 4)
	if err != nil {
		t.Fatal(err)
	}
	fl := &block.Req{Op: block.OpFlush}
	wr := &block.Req{Op: block.OpWrite, Buf: []byte{1}}
	if err := q.Submit(fl, wr); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 2)
	for n := 0; n < 2; {
		k, err := q.Wait(out[n:], 1)
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	pe, ok := errors.AsType[*block.PanicError](fl.Err)
	if !ok || pe.Value != "flush boom" || len(pe.Stack) == 0 {
		t.Fatalf("flush: %v, want the panic", fl.Err)
	}
	if wr.Err != nil {
		t.Fatalf("write beside it: %v", wr.Err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
