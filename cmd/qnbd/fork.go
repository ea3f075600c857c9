package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// --fork: Go cannot fork a running process, so the parent starts itself
// again with forkedEnv set and a pipe as file descriptor 3; the child
// writes one byte there once its socket listens, and the parent exits 0
// then (as qemu-nbd's parent does), or 1 if the child died first.
const forkedEnv = "QNBD_FORKED"

func forkServer(args []string, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), forkedEnv+"=1")
	cmd.Stderr = stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	var b [1]byte
	if n, _ := r.Read(b[:]); n == 1 {
		cmd.Process.Release()
		return nil
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("server failed to start: %w", err)
	}
	return errors.New("server exited before listening")
}

// readyNotifier returns the child's "listening" signal, or nil when not
// forked.
func readyNotifier() func() {
	if os.Getenv(forkedEnv) == "" {
		return nil
	}
	return func() {
		f := os.NewFile(3, "qnbd-ready")
		f.Write([]byte{1})
		f.Close()
		// The parent's stderr may go away with it: keep logging to it
		// only as long as it is there (writes to a closed pipe fail
		// silently; SIGPIPE is not raised for fd 2 in Go programs).
	}
}
