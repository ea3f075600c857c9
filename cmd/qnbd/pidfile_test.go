package main

import (
	"bytes"
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
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err = os.ReadFile(pidf); (err == nil && string(b) == want) || time.Now().After(end) {
			break
		}
	}
	if err != nil || string(b) != want {
		t.Fatalf("pid file: %q, %v; want %q", b, err, want)
	}
	bsock := filepath.Join(dir, "b.sock")
	cmd := exec.Command(filepath.Join(bin, "qnbd"), "-r", "--pid-file", pidf, "-k", bsock, img2)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if code, err := launch(t, bsock, cmd); code != 1 || !strings.Contains(out.String(), "Cannot lock pid file") {
		t.Errorf("a second server with the same pid file: exit %d (-1: serves), %v\n%s", code, err, out.String())
	}
	if b, err := os.ReadFile(pidf); err != nil || string(b) != want {
		t.Errorf("pid file after the second server: %q, %v; want %q", b, err, want)
	}
	s.stop()
	if _, err := os.Stat(pidf); !os.IsNotExist(err) {
		t.Errorf("pid file left after exit: %v", err)
	}
}
