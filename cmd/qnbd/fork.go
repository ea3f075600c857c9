package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
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
		return fmt.Errorf("%w: %w", errChildFailed, err)
	}
	return errors.New("server exited before listening")
}

// errChildFailed is a forked server that failed before it listened: it
// said why on stderr, and the parent exits 1 without a word, as
// qemu-nbd's.
var errChildFailed = errors.New("server failed to start")

// forkedChild reports whether this process is the server --fork started.
func forkedChild() bool { return os.Getenv(forkedEnv) != "" }

// childStderr is the forked server's log output: the parent's stderr
// until the server listens, then nothing. Once the parent exited, its
// caller waits for the end of the stderr pipe (a shell's $(...), a test's
// exec.Cmd): the child closes its descriptor 2 so that they see it, as
// qemu-nbd's child does.
type childStderr struct {
	mu  sync.Mutex
	off bool
}

func (w *childStderr) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off {
		return len(p), nil
	}
	return os.Stderr.Write(p)
}

// ready tells the parent the server listens, then lets go of stderr.
func (w *childStderr) ready() {
	f := os.NewFile(3, "qnbd-ready")
	f.Write([]byte{1})
	f.Close()
	w.mu.Lock()
	w.off = true
	os.Stderr.Close()
	w.mu.Unlock()
}
