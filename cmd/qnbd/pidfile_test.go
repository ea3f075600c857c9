package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPidFileLocked: the pid file is locked while the server runs, as
// qemu-nbd's: a second server given the same --pid-file fails at start
// ("Cannot lock pid file") instead of overwriting it, and the first
// removes its own pid file at exit, not the second's.
func TestPidFileLocked(t *testing.T) {
	need(t, "qemu-img")
	dir, img := create(t, "1M")
	img2 := filepath.Join(dir, "img2")
	sh(t, "qemu-img", "create", "-f", "qcow2", img2, "1M")
	pidf := filepath.Join(dir, "pid")
	s := startUnix(t, dir, "a", "--pid-file", pidf, img)
	want := fmt.Sprintf("%d\n", s.cmd.Process.Pid)
	// The socket accepts (in the kernel's backlog) as soon as it listens,
	// which is just before the pid file is written: wait for the file,
	// as a user of --pid-file does.
	var b []byte
	var err error
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err = os.ReadFile(pidf); (err == nil && string(b) == want) || time.Now().After(end) {
			break
		}
	}
	if err != nil || string(b) != want {
		t.Fatalf("pid file: %q, %v; want %q", b, err, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "qnbd"), "-r", "--pid-file", pidf,
		"-k", filepath.Join(dir, "b.sock"), img2).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "Cannot lock pid file") {
		t.Errorf("a second server with the same pid file: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(pidf); err != nil || string(b) != want {
		t.Errorf("pid file after the second server: %q, %v; want %q", b, err, want)
	}
	s.stop()
	if _, err := os.Stat(pidf); !os.IsNotExist(err) {
		t.Errorf("pid file left after exit: %v", err)
	}
}
