package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
)

// passDiscardGiven reports whether the -o engine options name
// pass-discard-request.
func passDiscardGiven(opts []string) bool {
	for _, s := range opts {
		kv, _ := qcow2.SplitOptions(s)
		for _, p := range kv {
			if p[0] == "pass-discard-request" {
				return true
			}
		}
	}
	return false
}

// maxString is the longest string the NBD protocol allows (export names
// and descriptions).
const maxString = 4096

// config is the validated command line.
type config struct {
	path        string
	spec        bool // path is an image spec (--image-opts, json:, driver=)
	open        imgopen.Spec
	name, desc  string
	bitmaps     []string               // -B: the dirty bitmaps to offer, in qemu-nbd's order (the last -B first)
	overlay     bool                   // -s: serve a temporary overlay (snapshot.go)
	snapshot    *imgopen.SnapshotParam // -l: serve an internal snapshot
	network     string                 // "unix" or "tcp"
	addr        string
	persistent  bool
	shared      int
	handshake   int // seconds
	unmap       bool
	allocDepth  bool // -A: offer qemu:allocation-depth
	detect      nbd.DetectZeroes
	fork        bool
	pidFile     string
	tls         *tls.Config
	verbose     bool
	socketOwned bool // remove the socket file at exit
	activated   bool // socket activation: listen on descriptor 3
}

func configure(f *flags) (*config, error) {
	if err := checkValues(f); err != nil {
		return nil, err
	}
	if len(f.args) != 1 {
		return nil, errArgCount
	}
	c := &config{path: f.args[0], name: f.get("export-name", ""), desc: f.get("description", ""),
		persistent: !f.has("once"), fork: f.has("fork"), pidFile: f.get("pid-file", ""),
		verbose: f.has("verbose"), allocDepth: f.has("allocation-depth")}
	c.spec = f.has("image-opts") || imgopen.IsSpec(c.path)
	// qemu-nbd 7.2 keeps its -B list the other way round (each one is
	// prepended): its contexts, and their ids, come in that order.
	for _, b := range slices.Backward(f.vals["bitmap"]) {
		c.bitmaps = append(c.bitmaps, b)
	}
	if len(c.bitmaps) > nbd.MaxBitmaps {
		return nil, fmt.Errorf("at most %d bitmaps (-B) can be offered", nbd.MaxBitmaps)
	}
	var eo qcow2.Options
	for _, s := range f.vals["options"] {
		if err := eo.ParseCommandLine(s); err != nil {
			if s != "" && s[0] >= '0' && s[0] <= '9' {
				// No engine option starts with a digit: this is
				// qemu-nbd's -o OFFSET.
				return nil, fmt.Errorf("%w\n%s", err, offsetHint(s, c.path))
			}
			return nil, err
		}
	}
	cache := f.get("cache", "writeback")
	if f.has("nocache") || cache == "off" {
		cache = "none" // QEMU's "off" is none
	}
	if _, err := imgopen.FileOptions(cache, f.get("aio", ""), false); err != nil {
		return nil, err
	}
	host := c.path
	if !c.spec {
		// "file:x" is x, an NBD name stays for the opener (openView);
		// another protocol is refused (protocol.Path).
		p, err := protocol.Path(c.path, false)
		if err != nil {
			return nil, &openError{image: c.path, err: err}
		}
		host = p
	}
	c.open = imgopen.Spec{Path: host, Format: f.get("format", ""), ReadOnly: f.has("read-only"),
		Cache: cache, AIO: f.get("aio", ""), Opts: eo, Secrets: &secret.Store{}}
	c.overlay = f.has("snapshot")
	if f.has("load-snapshot") {
		p, err := imgopen.ParseSnapshotParam(f.get("load-snapshot", ""))
		if err != nil {
			// qemu-nbd's second line quotes it `so'.
			msg := strings.Replace(err.Error(), "\nFailed in parsing snapshot param '", "\nqnbd: Failed in parsing snapshot param `", 1)
			return nil, errors.New(msg)
		}
		c.snapshot = &p
		c.open.ReadOnly = true // as qemu-nbd: -l exports read-only
	}
	tlsObjs := map[string]tlsCreds{}     // --object tls-creds-x509, for --tls-creds=ID
	authz := map[string]string{}         // --object authz-simple: identities, for --tls-authz=ID
	for _, o := range f.vals["object"] { // else encrypted images' secrets (encrypt.key-secret)
		if id, identity, isAuthz, err := authzObject(o); err != nil {
			return nil, err
		} else if isAuthz {
			if _, dup := authz[id]; dup {
				return nil, fmt.Errorf("--object: duplicate id %q", id)
			}
			authz[id] = identity
			continue
		}
		id, tc, isTLS, err := tlsObject(o)
		if err != nil {
			return nil, err
		}
		if !isTLS {
			if err := c.open.Secrets.Add(o); err != nil {
				return nil, err
			}
			continue
		}
		if _, dup := tlsObjs[id]; dup {
			return nil, fmt.Errorf("--object: duplicate id %q", id)
		}
		tlsObjs[id] = tc
	}
	if c.spec && f.has("format") && !strings.HasPrefix(c.path, "json:") {
		// A json: name takes -f over its root driver (openSpec).
		return nil, errors.New("--image-opts and -f are mutually exclusive")
	}
	var err error
	c.shared, _ = sharedNumber(f.get("shared", "1")) // checkValues checked it
	if c.handshake, err = f.int("handshake-limit", 10); err != nil {
		return nil, err
	}
	c.unmap = f.get("discard", "ignore") == "unmap" || f.get("discard", "") == "on"
	if !c.unmap && !passDiscardGiven(f.vals["options"]) {
		// As qemu-nbd's --discard=ignore: the clusters a zeroing frees
		// stay the image's, their host space is not punched (QEMU's file
		// node ignores the discards the qcow2 driver passes down),
		// unless -o pass-discard-request says otherwise.
		c.open.Opts.NoPassDiscard = true
	}
	switch f.get("detect-zeroes", "off") {
	case "on":
		c.detect = nbd.DetectOn
	case "unmap":
		c.detect = nbd.DetectUnmap // checkValues: with --discard=unmap
	}
	nact, err := activatedFDs()
	if err != nil {
		return nil, err
	}
	if nact > 0 {
		if err := checkActivation(nact, f); err != nil {
			return nil, err
		}
		c.activated = true // the socket is descriptor 3 (activation.go)
	} else if s := f.get("socket", ""); s != "" {
		c.network, c.addr = "unix", s // -p and -b do not count then, as qemu-nbd's
	} else {
		if c.addr, err = tcpAddress(f); err != nil {
			return nil, err
		}
		c.network = "tcp"
	}
	cert, key := f.get("tls-cert", ""), f.get("tls-key", "")
	for _, k := range []string{"tls-creds", "tls-cert", "tls-key"} {
		// Given but empty (an unset variable in a script) must not
		// serve without TLS.
		if f.has(k) && f.get(k, "") == "" {
			return nil, fmt.Errorf("--%s: empty value", k)
		}
	}
	if f.has("tls-authz") && f.get("tls-creds", "") == "" {
		return nil, errors.New("--tls-authz is not permitted without --tls-creds")
	}
	if v := f.get("tls-creds", ""); v != "" {
		if cert != "" || key != "" {
			return nil, errors.New("--tls-creds and --tls-cert/--tls-key are mutually exclusive")
		}
		// qemu-nbd's form, --tls-creds=ID of a --object
		// tls-creds-x509; else DIR[,verify-peer=...].
		tc, ok := tlsObjs[v]
		if !ok {
			if !strings.ContainsAny(v, ",=/") && !isDir(v) {
				// An id (QEMU's have no ',', '=' or '/') of no object,
				// and no directory (qnbd's own form): qemu-nbd's words.
				return nil, fmt.Errorf("Failed to get TLS creds: No TLS credentials with id '%s'", v)
			}
			if tc, err = parseTLSCreds(v); err != nil {
				return nil, err
			}
		}
		if f.has("tls-authz") {
			id := f.get("tls-authz", "")
			identity, ok := authz[id]
			if !ok {
				return nil, fmt.Errorf("--tls-authz: no --object authz-simple with id %q", id)
			}
			if !tc.verifyPeer {
				// QEMU checks no authorization without verify-peer:
				// refused rather than serving every client.
				return nil, errors.New("--tls-authz needs the TLS credentials' verify-peer=on (clients' certificates checked)")
			}
			tc.authz = &identity
		}
		if c.tls, err = tc.config(); err != nil {
			return nil, err
		}
	} else if (cert == "") != (key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	} else if cert != "" {
		// A bare certificate and key: clients are not authenticated
		// (QEMU's verify-peer=off); --tls-creds has a CA to check them.
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("TLS credentials: %w", err)
		}
		c.tls = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	}
	return c, nil
}

// offsetHint tells a qemu-nbd user where its -o/--offset went: qnbd's
// -o is --options, and an offset into the image is a raw layer over it,
// as qemu-nbd builds one (the spec names the image's format: -f does
// not go with --image-opts).
func offsetHint(n, file string) string {
	file = strings.ReplaceAll(file, ",", ",,")
	return fmt.Sprintf("qnbd's -o is --options (qcow2 engine options), not qemu-nbd's -o/--offset; "+
		"to export from an offset use --image-opts driver=raw,offset=%s,file.filename=%s "+
		"(for a qcow2 image: driver=raw,offset=%[1]s,file.driver=qcow2,file.file.filename=%[2]s)", n, file)
}
