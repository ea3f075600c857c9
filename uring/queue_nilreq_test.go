package uring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/uring"
)

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
		blocktest.CheckNilSubmit(t, q)
	})
	t.Run("vec", func(t *testing.T) {
		q, err := block.NewVecQueue(f, 4)
		if err != nil {
			t.Fatal(err)
		}
		blocktest.CheckNilSubmit(t, q)
	})
	t.Run("go", func(t *testing.T) {
		q, err := block.NewGoQueue(f, 4)
		if err != nil {
			t.Fatal(err)
		}
		blocktest.CheckNilSubmit(t, q)
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
