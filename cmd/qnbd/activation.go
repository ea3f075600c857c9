package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Socket activation (systemd's LISTEN_PID and LISTEN_FDS, as qemu-nbd
// reads them, and as libnbd's tools start a server: nbdinfo -- [ qnbd
// IMG ]): the listening socket is file descriptor 3, passed by whoever
// started the server.

// firstActivatedFD is SD_LISTEN_FDS_START.
const firstActivatedFD = 3

// activatedFDs is the number of sockets passed to this process: 0 when
// LISTEN_PID does not name it (no activation, or meant for another), or
// an error for a LISTEN_FDS that does not parse.
func activatedFDs() (int, error) {
	pid, ok := os.LookupEnv("LISTEN_PID")
	if !ok {
		return 0, nil
	}
	if n, err := strconv.Atoi(pid); err != nil || n != os.Getpid() {
		return 0, nil
	}
	fds, ok := os.LookupEnv("LISTEN_FDS")
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("unexpected value for LISTEN_FDS environment variable: %q", fds)
	}
	for fd := firstActivatedFD; fd < firstActivatedFD+n; fd++ {
		syscall.CloseOnExec(fd)
	}
	return n, nil
}

// checkActivation refuses, in qemu-nbd's words, what cannot go with an
// activated socket: a socket or address of its own, or several sockets.
func checkActivation(n int, f *flags) error {
	switch {
	case f.has("socket"):
		return errors.New("Unix socket can't be set when using socket activation")
	case f.has("bind"):
		return errors.New("The interface can't be set when using socket activation")
	case f.has("port"):
		return errors.New("TCP port number can't be set when using socket activation")
	case n > 1:
		return errors.New("qnbd does not support socket activation with LISTEN_FDS > 1")
	}
	return nil
}

// activatedListener is the listening socket passed as descriptor 3.
func activatedListener() (net.Listener, error) {
	f := os.NewFile(firstActivatedFD, "LISTEN_FDS")
	defer f.Close() // FileListener holds its own descriptor
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket activation: descriptor %d: %w", firstActivatedFD, err)
	}
	return l, nil
}
