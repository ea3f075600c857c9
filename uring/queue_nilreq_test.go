package uring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring"
)

// checkNilSubmit submits a nil request (with a valid one beside it) and
// expects ErrNilReq with nothing started: no panic, nothing counted in
// flight, and a Close that returns. Before the fix every queue counted
// the batch, then panicked on the nil request, so InFlight stayed 1 for
// ever and Close (and the device's Close) hung; GoQueue panicked on its
// own goroutine, ending the process.
func checkNilSubmit(t *testing.T, q block.Queue) {
	t.Helper()
	var err error
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
	time.Sleep(50 * time.Millisecond) // a GoQueue's goroutine would crash here
	if n := q.InFlight(); n != 0 {
		t.Errorf("InFlight after a refused Submit = %d, want 0", n)
	}
	done := make(chan error, 1)
	go func() { done <- q.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queue Close hangs after Submit(nil)")
	}
}

func TestNilReqSubmit(t *testing.T) {
	if os.Getenv("QRING_NILREQ_CHILD") == "" {
		// GoQueue's failure mode is a crash of the whole process: run the
		// checks in a child so that it reports as a failure.
		cmd := exec.Command(os.Args[0], "-test.run=^TestNilReqSubmit$", "-test.v")
		cmd.Env = append(os.Environ(), "QRING_NILREQ_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child failed: %v\n%s", err, out)
		}
		return
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := uring.Open(p, uring.Options{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("uring", func(t *testing.T) {
		q, err := f.NewQueue(4)
		if err != nil {
			t.Fatal(err)
		}
		checkNilSubmit(t, q)
	})
	t.Run("vec", func(t *testing.T) {
		q, err := block.NewVecQueue(f, 4)
		if err != nil {
			t.Fatal(err)
		}
		checkNilSubmit(t, q)
	})
	t.Run("go", func(t *testing.T) {
		q, err := block.NewGoQueue(f, 4)
		if err != nil {
			t.Fatal(err)
		}
		checkNilSubmit(t, q)
	})
	done := make(chan error, 1)
	go func() { done <- f.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("File.Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("File.Close hangs")
	}
}
