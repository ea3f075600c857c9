//go:build linux

package uring

import (
	"os"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal (TCGETS succeeds on it; a
// character device such as /dev/null is not one). It lives here because
// uring is the one package that talks to the kernel.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
