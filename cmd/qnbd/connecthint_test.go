package main

import (
	"strings"
	"testing"
)

// TestFlags_ConnectHint: qemu-nbd's -c/--connect DEV, which qnbd does
// not have, is refused as getopt refuses it, with the way to the same
// end (the kernel's client on qnbd's socket); other unknown options
// get no hint.
func TestFlags_ConnectHint(t *testing.T) {
	for _, c := range []struct {
		args []string
		hint bool
	}{
		{[]string{"-c", "/dev/nbd0", "x.qcow2"}, true},
		{[]string{"-rc", "/dev/nbd0", "x.qcow2"}, true},
		{[]string{"--connect=/dev/nbd0", "x.qcow2"}, true},
		{[]string{"-Z", "x.qcow2"}, false},
		{[]string{"--bogus", "x.qcow2"}, false},
	} {
		_, err := parseFlags(c.args)
		if err == nil {
			t.Fatalf("qnbd %q accepted", c.args)
		}
		if got := strings.Contains(err.Error(), "nbd-client -unix"); got != c.hint {
			t.Errorf("qnbd %q: %q: hint %v, want %v", c.args, err, got, c.hint)
		}
	}
}
