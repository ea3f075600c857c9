package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// qemu-nbd's words for a command line it refuses: its option loop checks
// each value as it comes (checkValues), then the argument count, then
// the listening address; qnbd says the same, where its options are
// qemu-nbd's.

// errArgCount is qemu-nbd's "Invalid number of arguments", which main
// follows with the line pointing at --help.
var errArgCount = errors.New("Invalid number of arguments")

// checkValues checks the options' values as qemu-nbd's option loop does,
// before the arguments are counted.
func checkValues(f *flags) error {
	if len(f.vals["nocache"])+len(f.vals["cache"]) > 1 {
		return errors.New("-n and --cache can only be specified once")
	}
	if v := f.get("cache", ""); f.has("cache") {
		switch v {
		case "none", "off", "writeback", "writethrough", "directsync", "unsafe":
		default:
			return fmt.Errorf("Invalid cache mode `%s'", v)
		}
	}
	if len(f.vals["aio"]) > 1 {
		return errors.New("--aio can only be specified once")
	}
	if v := f.get("aio", ""); f.has("aio") && v != "threads" && v != "native" && v != "io_uring" {
		return fmt.Errorf("Invalid aio mode '%s'", v)
	}
	if len(f.vals["discard"]) > 1 {
		return errors.New("--discard can only be specified once")
	}
	unmap := false
	switch v := f.get("discard", "ignore"); v {
	case "ignore", "off":
	case "unmap", "on":
		unmap = true
	default:
		return fmt.Errorf("Invalid discard mode `%s'", v)
	}
	switch v := f.get("detect-zeroes", "off"); v {
	case "off", "on":
	case "unmap":
		// qemu-nbd asks for --discard=unmap before it; any order here.
		if !unmap {
			return errors.New("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
		}
	default:
		return fmt.Errorf("Failed to parse detect_zeroes mode: invalid parameter value: %s", v)
	}
	if s := f.get("socket", ""); f.has("socket") && !strings.HasPrefix(s, "/") {
		return errors.New("socket path must be absolute")
	}
	if v := f.get("shared", ""); f.has("shared") {
		if _, err := sharedNumber(v); err != nil {
			return err
		}
	}
	// The protocol's strings are at most 4096 bytes (section
	// "Conventions"): no client could ask for a longer name, and
	// NBD_OPT_LIST and NBD_INFO_DESCRIPTION would carry too long a
	// string. qemu-nbd refuses them too.
	if v := f.get("export-name", ""); len(v) > maxString {
		return fmt.Errorf("export name '%s' too long", v)
	}
	if v := f.get("description", ""); len(v) > maxString {
		return fmt.Errorf("export description '%s' too long", v)
	}
	return nil
}

// sharedNumber is -e's value as qemu-nbd reads it (qemu_strtoi, base 0:
// 0x10 is 16, 010 is 8), at least 0.
func sharedNumber(s string) (int, error) {
	n, err := strconv.ParseInt(strings.TrimLeft(s, " \t\n\v\f\r"), 0, 32)
	if err != nil || n < 0 || strings.Contains(s, "_") {
		return 0, fmt.Errorf("Invalid shared device number '%s'", s)
	}
	return int(n), nil
}

// tcpAddress is the host:port to listen on, or -L's to connect to: -b
// (default 0.0.0.0) and -p (default 10809). A port that is not a number
// up to 65535 is refused as getaddrinfo refuses a service name it does
// not know.
func tcpAddress(f *flags) (string, error) {
	host, port := f.get("bind", "0.0.0.0"), f.get("port", "")
	if port == "" {
		port = "10809"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port[0] == '+' {
		return "", fmt.Errorf("address resolution failed for %s:%s: Servname not supported for ai_socktype", host, port)
	} else {
		port = strconv.FormatUint(n, 10)
	}
	return net.JoinHostPort(host, port), nil
}

// listenError words a failure to listen as qemu-nbd does.
func listenError(network, addr string, err error) error {
	var dns *net.DNSError
	switch {
	case network == "unix":
		return fmt.Errorf("Failed to bind socket to %s: %s", addr, errnoText(err))
	case errors.As(err, &dns):
		return fmt.Errorf("address resolution failed for %s: Name or service not known", addr)
	case errors.Is(err, syscall.EADDRINUSE):
		return errors.New("Failed to find an available port: Address already in use")
	}
	return fmt.Errorf("Failed to bind socket: %s", errnoText(err))
}

// listModeError is -L's refusal of what goes with serving an image, as
// qemu-nbd's; nil if there is none.
func listModeError(f *flags) error {
	if len(f.args) > 0 {
		return errors.New("List mode is incompatible with a file name")
	}
	for _, k := range []string{"export-name", "description", "options", "format", "load-snapshot", "bitmap",
		"allocation-depth", "aio", "discard", "cache", "nocache"} {
		if f.has(k) {
			return errors.New("List mode is incompatible with per-device settings")
		}
	}
	if f.has("fork") {
		return errors.New("List mode is incompatible with forking")
	}
	return nil
}

// isDir reports whether p names a directory.
func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
