//go:build linux

package uring

import (
	"errors"
	"testing"
	"time"

	"github.com/qring/qring/block"
)

// Found in review (2026-11-30): RegisterBuffers takes the eventfd read
// back first (disarm); when that failed, it returned before re-arming,
// and the read stayed unarmed for good: a slow-path completion or a Wake
// could no longer end a Wait sleeping in the ring (A5), and a Wait for
// a slow request alone slept for ever.
func TestRegress_FailedRegisterKeepsWakeups(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring})
	qq, err := f.NewQueue(4)
	if err != nil {
		t.Skipf("no queue: %v", err)
	}
	q := qq.(*Queue)
	testDisarmErr = errors.New("test: injected enter failure")
	err = q.RegisterBuffers(make([]byte, 4096))
	testDisarmErr = nil
	if err == nil {
		t.Fatal("RegisterBuffers succeeded with its disarm failing")
	}
	req := &block.Req{Op: block.OpWriteZeroes, Off: 0, Len: 4096} // always the slow path
	if err := q.Submit(req); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		out := make([]*block.Req, 1)
		n, _ := q.Wait(out, 1)
		done <- n
	}()
	select {
	case n := <-done:
		if n != 1 || req.Err != nil {
			t.Fatalf("Wait: %d, %v", n, req.Err)
		}
	case <-time.After(10 * time.Second):
		// Nothing can wake the Wait now, and closing would wait for it.
		panic("Wait never returned the slow request: the wake-up was lost")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
