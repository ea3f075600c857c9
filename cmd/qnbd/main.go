// Command qnbd exports a disk image over NBD with the qring engine, as
// qemu-nbd does with QEMU's block layer: the same options (see usage),
// the protocol from package nbd, block status from the engine's map.
//
//	qnbd [-f qcow2|raw] [-x NAME] [-k SOCKET | -b ADDR -p PORT] [-r] [-t]
//	     [-e N] [--cache=MODE] [--aio=MODE] [--discard=ignore|unmap]
//	     [--detect-zeroes=off|on|unmap] [-s] [-l SNAPSHOT] [--fork] [--pid-file=FILE]
//	     [--image-opts] [--object secret,id=ID,data=...] [-o ENGINE-OPTS] [--tls-cert=F --tls-key=F |
//	     --object tls-creds-x509,id=ID,dir=DIR,endpoint=server --tls-creds=ID |
//	     --tls-creds=DIR[,verify-peer=off]] [-v] FILE
//
// -s serves a temporary overlay and -l an internal snapshot, as
// qemu-nbd's (snapshot.go). Differences from qemu-nbd: there is no -c
// (kernel device); -o carries the engine's qcow2 options, not qemu-nbd's
// -o/--offset (an offset is a raw layer: --image-opts
// driver=raw,offset=N,file.filename=FILE). TLS comes, as in qemu-nbd,
// from --object tls-creds-x509,id=ID,dir=DIR,endpoint=server with
// --tls-creds=ID (the other --object types are secret, the passphrases
// of encrypted images, and authz-simple, the client --tls-authz=ID lets
// in: tlsauthz.go), or from a directory laid out as
// QEMU's tls-creds-x509 dir= given as --tls-creds=DIR, or from a
// certificate and key in PEM files (--tls-cert/--tls-key).
//
// --tls-creds=DIR behaves as tls-creds-x509,endpoint=server,dir=DIR: the
// server presents server-cert.pem (key server-key.pem) and, with
// verify-peer=on (QEMU's default), refuses in the TLS handshake every
// client that does not present a certificate the CAs of ca-cert.pem sign
// (with, if the certificate names purposes, TLS client authentication
// among them) and ca-crl.pem, if present, does not revoke.
// --tls-creds=DIR,verify-peer=off accepts any client. --tls-cert and
// --tls-key never authenticate clients.
//
// Unlike qemu-nbd, qnbd keeps serving after its last client disconnected
// whether or not -t is given (clients often come one after another:
// qemu-io, then nbdinfo); --once gives qemu-nbd's default. As in qemu-nbd,
// a connection that closes without negotiating (a port scan, nc -z, a
// readiness probe) is no client; with --once the server exits when a
// client was served and no connection is left. On SIGTERM or SIGINT it
// stops accepting, lets the requests in flight finish, flushes and
// closes the image. A second signal during that shutdown hurries it:
// the connections close at once (requests in flight are cut off without
// replies; a client that does not read its replies no longer holds the
// shutdown), and the image is flushed and closed as soon as the requests
// already running on it return. A third exits at once without flushing
// or closing the image, which is then as after a crash: every write
// acknowledged before a completed flush (or with FUA) is there, and a
// qcow2 image may leak clusters (qemu-img check -r leaks repairs that)
// and, with lazy refcounts, be left marked dirty; later writes may be
// lost. Signals less than a second apart count as one (timeout(1) sends
// two at once). qemu-nbd 7.2 exits on the first signal, but waits for a
// client that does not read its replies, and no second signal hurries it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/qring/qring/cmd/internal/buildinfo"
)

// protocolVersion follows the build's version on --version's line.
const protocolVersion = "NBD protocol: fixed newstyle, structured replies"

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
		fmt.Fprintf(stderr, "qnbd: %v\nqnbd: Try `qnbd --help' for more information.\n", err)
		return 1
	}
	if f.has("help") {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if f.has("version") {
		fmt.Fprintf(stdout, "%s, %s\n", buildinfo.Version("qnbd"), protocolVersion)
		return 0
	}
	if f.has("list") {
		return listExports(f, stdout, stderr)
	}
	cfg, err := configure(f)
	if err != nil {
		fmt.Fprintf(stderr, "qnbd: %v\n", err)
		if err == errArgCount {
			fmt.Fprintln(stderr, "Try `qnbd --help' for more information.")
		}
		return 1
	}
	// A dirty image's repair on open prints its lines, as qemu-nbd's.
	cfg.open.Opts.RepairLog = func(s string) { fmt.Fprintln(stderr, s) }
	if cfg.fork && !forkedChild() {
		if err := forkServer(args, stderr); err != nil {
			if !errors.Is(err, errChildFailed) {
				fmt.Fprintf(stderr, "qnbd: %v\n", err)
			}
			return 1 // the server said why on stderr
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
