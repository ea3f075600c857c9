// Command qnbd exports a disk image over NBD with the qring engine, as
// qemu-nbd does with QEMU's block layer: the same options (see usage),
// the protocol from package nbd, block status from the engine's map.
//
//	qnbd [-f qcow2|raw] [-x NAME] [-k SOCKET | -b ADDR -p PORT] [-r] [-t]
//	     [-e N] [--cache=MODE] [--aio=MODE] [--discard=ignore|unmap]
//	     [--detect-zeroes=off|on|unmap] [--fork] [--pid-file=FILE]
//	     [--image-opts] [--object secret,id=ID,data=...] [-o ENGINE-OPTS] [--tls-cert=F --tls-key=F |
//	     --tls-creds=DIR] [-v] FILE
//
// Differences from qemu-nbd: there is no -c (kernel device) or -l
// (snapshots); -o carries the engine's qcow2 options; TLS comes from a
// certificate and key in PEM files (--tls-cert/--tls-key), or from a
// directory laid out as QEMU's tls-creds-x509 dir= (server-cert.pem,
// server-key.pem) given as --tls-creds=DIR, instead of a --object
// (--object takes secrets only: the passphrases of encrypted images).
//
// Unlike qemu-nbd, qnbd keeps serving after its last client disconnected
// whether or not -t is given (clients often come one after another:
// qemu-io, then nbdinfo); --once gives qemu-nbd's default. On
// SIGTERM or SIGINT it stops accepting, lets the requests in flight
// finish, flushes and closes the image.
package main

import (
	"fmt"
	"io"
	"os"
)

const version = "qnbd (qring) 0.1, NBD protocol: fixed newstyle, structured replies"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command: main only calls it and exits.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "qnbd: internal error: %v\n", r)
			code = 1
		}
	}()
	f, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "qnbd: %v\nTry 'qnbd --help' for more information.\n", err)
		return 1
	}
	if f.has("help") {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if f.has("version") {
		fmt.Fprintln(stdout, version)
		return 0
	}
	cfg, err := configure(f)
	if err != nil {
		fmt.Fprintf(stderr, "qnbd: %v\n", err)
		return 1
	}
	if cfg.fork && !forkedChild() {
		if err := forkServer(args, stderr); err != nil {
			fmt.Fprintf(stderr, "qnbd: %v\n", err)
			return 1
		}
		return 0
	}
	var ready func()
	if forkedChild() {
		w := &childStderr{}
		stderr, ready = w, w.ready
	}
	if err := serve(cfg, stderr, ready); err != nil {
		fmt.Fprintf(stderr, "qnbd: %v\n", err)
		return 1
	}
	return 0
}
