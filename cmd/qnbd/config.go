package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
)

// config is the validated command line.
type config struct {
	path        string
	spec        bool // path is an image spec (--image-opts, json:, driver=)
	open        imgopen.Spec
	name, desc  string
	network     string // "unix" or "tcp"
	addr        string
	persistent  bool
	shared      int
	handshake   int // seconds
	unmap       bool
	detect      nbd.DetectZeroes
	fork        bool
	pidFile     string
	tls         *tls.Config
	verbose     bool
	socketOwned bool // remove the socket file at exit
}

func configure(f *flags) (*config, error) {
	if len(f.args) != 1 {
		return nil, errors.New("expected exactly one image file (try 'qnbd --help')")
	}
	c := &config{path: f.args[0], name: f.get("export-name", ""), desc: f.get("description", ""),
		persistent: !f.has("once"), fork: f.has("fork"), pidFile: f.get("pid-file", ""),
		verbose: f.has("verbose")}
	c.spec = f.has("image-opts") || imgopen.IsSpec(c.path)
	var eo qcow2.Options
	for _, s := range f.vals["options"] {
		if err := eo.Parse(s); err != nil {
			return nil, err
		}
	}
	cache := f.get("cache", "writeback")
	if f.has("nocache") {
		cache = "none"
	}
	if _, err := imgopen.FileOptions(cache, f.get("aio", ""), false); err != nil {
		return nil, err
	}
	c.open = imgopen.Spec{Path: c.path, Format: f.get("format", ""), ReadOnly: f.has("read-only"),
		Cache: cache, AIO: f.get("aio", ""), Opts: eo, Secrets: &secret.Store{}}
	for _, o := range f.vals["object"] { // encrypted images (encrypt.key-secret)
		if err := c.open.Secrets.Add(o); err != nil {
			return nil, err
		}
	}
	if c.spec && f.has("format") {
		return nil, errors.New("--image-opts and -f are mutually exclusive (the spec names the driver)")
	}
	var err error
	if c.shared, err = f.int("shared", 1); err != nil {
		return nil, err
	}
	if c.handshake, err = f.int("handshake-limit", 10); err != nil {
		return nil, err
	}
	switch d := f.get("discard", "ignore"); d {
	case "ignore", "off":
	case "unmap", "on":
		c.unmap = true
	default:
		return nil, fmt.Errorf("invalid discard mode %q (ignore, unmap)", d)
	}
	switch d := f.get("detect-zeroes", "off"); d {
	case "off":
	case "on":
		c.detect = nbd.DetectOn
	case "unmap":
		c.detect = nbd.DetectUnmap
	default:
		return nil, fmt.Errorf("invalid detect-zeroes mode %q (off, on, unmap)", d)
	}
	if s := f.get("socket", ""); s != "" {
		if f.has("port") || f.has("bind") {
			return nil, errors.New("-k is incompatible with -p and -b")
		}
		c.network, c.addr = "unix", s
	} else {
		port, err := f.int("port", 10809)
		if err != nil || port > 65535 {
			return nil, fmt.Errorf("invalid port %q", f.get("port", ""))
		}
		c.network, c.addr = "tcp", fmt.Sprintf("%s:%d", bracket(f.get("bind", "0.0.0.0")), port)
	}
	cert, key := f.get("tls-cert", ""), f.get("tls-key", "")
	if d := f.get("tls-creds", ""); d != "" {
		if cert != "" || key != "" {
			return nil, errors.New("--tls-creds and --tls-cert/--tls-key are mutually exclusive")
		}
		cert, key = filepath.Join(d, "server-cert.pem"), filepath.Join(d, "server-key.pem")
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("TLS credentials: %w", err)
		}
		c.tls = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	}
	return c, nil
}

// bracket puts an IPv6 address in brackets for host:port.
func bracket(h string) string {
	for i := 0; i < len(h); i++ {
		if h[i] == ':' && h[0] != '[' {
			return "[" + h + "]"
		}
	}
	return h
}
