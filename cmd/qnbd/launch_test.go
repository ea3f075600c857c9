package main

import (
	"errors"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"
)

// launchGuard bounds launch: a hang guard, reached only by a server that
// neither exits nor serves.
const launchGuard = 60 * time.Second

// launch runs cmd, a server (qnbd or qemu-nbd) that should either fail at
// start or serve on the Unix socket sock, until one of the two happens.
// It returns the exit code and Wait's error once the server exits (the
// code is -1 if a signal ended it), or -1 and a nil error once it serves:
// a client connecting to sock gets the NBD greeting (a socket that
// accepts is not enough: qemu-nbd listens before it opens the image);
// the server is then killed. With sock empty, serving is not detected,
// and a server still running after launchGuard is killed and reported
// as serving (-1), as is one that, on sock, neither exits nor greets in
// that time.
//
// The runs used to be bounded by 3 to 5 s, a timeout counting as
// serving: a refusal slower than that on a loaded machine passed for a
// server that serves. Now a refusal is waited for and serving is seen as
// it happens, so a test pays for the guard only when something hangs.
func launch(t *testing.T, sock string, cmd *exec.Cmd) (code int, err error) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	kill := func() {
		cmd.Process.Kill()
		<-done
	}
	exited := func(err error) (int, error) {
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, nil
		case errors.As(err, &ee):
			return ee.ExitCode(), err
		}
		t.Fatalf("%s %q: %v", cmd.Path, cmd.Args[1:], err)
		return 0, err
	}
	deadline := time.Now().Add(launchGuard)
	for {
		select {
		case err := <-done:
			return exited(err)
		default:
		}
		if sock != "" && greets(sock, deadline, done) {
			kill()
			return -1, nil
		}
		if time.Now().After(deadline) {
			kill()
			return -1, nil
		}
		select {
		case err := <-done:
			return exited(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// greets reports whether a client connecting to the Unix socket sock
// gets the NBD greeting before deadline; it gives up at once if nothing
// listens there, and when the server ends (done delivers: put back).
func greets(sock string, deadline time.Time, done chan error) bool {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return false
	}
	defer c.Close()
	got := make(chan bool, 1)
	go func() {
		c.SetReadDeadline(deadline)
		magic := make([]byte, 8)
		_, err := io.ReadFull(c, magic)
		got <- err == nil && string(magic) == "NBDMAGIC"
	}()
	select {
	case ok := <-got:
		return ok
	case err := <-done:
		done <- err // the caller reads it
		return false
	}
}
