package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/qring/qring/internal/optstr"
)

// tlsCreds is --tls-creds=DIR[,verify-peer=on|off]: a directory laid out
// as QEMU's tls-creds-x509 dir= for the server endpoint, and its
// verify-peer property.
type tlsCreds struct {
	dir        string
	verifyPeer bool
	authz      *string // --tls-authz's identity (tlsauthz.go), if any
}

// parseTLSCreds reads the --tls-creds value: the directory (or dir=DIR),
// then properties, comma-separated as in QEMU's --object (",," is a
// comma in the directory's name). verify-peer defaults to on, as in
// QEMU.
func parseTLSCreds(s string) (tlsCreds, error) {
	tc := tlsCreds{verifyPeer: true}
	for i, e := range optstr.Split(s) {
		k, v, ok := strings.Cut(e, "=")
		switch {
		case i == 0 && (!ok || k != "dir" && k != "verify-peer"):
			tc.dir = e // a bare directory, which may contain '='
		case k == "dir":
			tc.dir = v
		case k == "verify-peer":
			var ok bool
			if tc.verifyPeer, ok = onOff(v); !ok {
				return tc, fmt.Errorf("--tls-creds: invalid verify-peer %q (on or off)", v)
			}
		default:
			return tc, fmt.Errorf("--tls-creds: unknown property %q (DIR[,verify-peer=on|off])", e)
		}
	}
	if tc.dir == "" {
		return tc, errors.New("--tls-creds: no directory (DIR[,verify-peer=on|off])")
	}
	return tc, nil
}

// errnoText is err's errno as strerror words it ("No such file or
// directory"), or err's text.
func errnoText(err error) string {
	var en syscall.Errno
	if !errors.As(err, &en) {
		return err.Error()
	}
	s := en.Error()
	return strings.ToUpper(s[:1]) + s[1:]
}

// encryptedKey reports whether the PEM file p holds an encrypted private
// key (PKCS#8 "ENCRYPTED PRIVATE KEY", or a legacy one with a
// Proc-Type: 4,ENCRYPTED header).
func encryptedKey(p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return false
		}
		if blk.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(blk.Headers["Proc-Type"], "ENCRYPTED") {
			return true
		}
	}
}

// config builds the server's TLS configuration from the directory, as
// QEMU's tls-creds-x509 does for endpoint=server: the certificate and
// key from server-cert.pem and server-key.pem; with verify-peer (the
// default) every client must present a certificate that the CAs of
// ca-cert.pem sign and, if ca-crl.pem exists, that it does not revoke.
// A client without one, or with one from another CA, fails the
// handshake. With verify-peer=off any client is accepted (ca-cert.pem is
// not needed then).
func (tc tlsCreds) config() (*tls.Config, error) {
	certPath, keyPath := filepath.Join(tc.dir, "server-cert.pem"), filepath.Join(tc.dir, "server-key.pem")
	// The files in QEMU's order (ca-cert.pem first), a missing one in
	// its words.
	need := []string{certPath, keyPath}
	if tc.verifyPeer {
		need = append([]string{filepath.Join(tc.dir, "ca-cert.pem")}, need...)
	}
	for i, p := range need {
		if _, err := os.Stat(p); err != nil {
			hint := ""
			if tc.verifyPeer && i == 0 {
				hint = " (verify-peer=on, the default, checks client certificates against it; --tls-creds=DIR,verify-peer=off accepts any client)"
			}
			return nil, fmt.Errorf("Unable to access credentials %s: %s%s", p, errnoText(err), hint)
		}
	}
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		if encryptedKey(keyPath) {
			err = errors.New("the key is encrypted (a passphrase-protected key is not supported)")
		}
		// qemu-nbd's words: "Cannot load certificate 'C' & key 'K': ..."
		return nil, fmt.Errorf("TLS credentials: Cannot load certificate '%s' & key '%s': %w", certPath, keyPath, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	if !tc.verifyPeer {
		return cfg, nil
	}
	caPath := filepath.Join(tc.dir, "ca-cert.pem")
	b, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("TLS credentials: %w (verify-peer=on, the default, checks client certificates against it; --tls-creds=DIR,verify-peer=off accepts any client)", err)
	}
	blks, err := pemBlocks(b, "CERTIFICATE", caPath)
	if err != nil {
		return nil, err
	}
	var cas []*x509.Certificate
	for _, blk := range blks {
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("TLS credentials: %s: %w", caPath, err)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("TLS credentials: %s: no certificate", caPath)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	crls, err := loadCRLs(filepath.Join(tc.dir, "ca-crl.pem"), cas)
	if err != nil {
		return nil, err
	}
	// The client's certificate is verified here, not by crypto/tls
	// (RequireAndVerifyClientCert with ClientCAs), so that the request
	// for it names no CA. GnuTLS clients (QEMU, libnbd) pick the
	// certificate to send from the CAs named and the request's
	// signature algorithms, and in TLS 1.3 Go's request lists no
	// PKCS#1 v1.5 algorithm (they are for certificates only there), so
	// GnuTLS 3.7 found its RSA certificate, signed that way, unsuitable
	// and sent none. Named no CA, GnuTLS sends its only certificate.
	// In VerifyConnection, which runs on resumed sessions too
	// (VerifyPeerCertificate does not: a client holding a session
	// ticket would skip the checks, the expired revocation list's
	// among them; found by review).
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		if err := verifyClient(raw, roots, crls, time.Now()); err != nil {
			return err
		}
		if tc.authz != nil {
			return authzCheck(cs.PeerCertificates[0], *tc.authz)
		}
		return nil
	}
	return cfg, nil
}

// verifyClient verifies the client's certificate chain raw (leaf first)
// as crypto/tls does for RequireAndVerifyClientCert: it must chain to
// roots through the certificates the client sent, be valid now and be
// meant for client authentication; and no certificate of the chain may
// be revoked (checkRevoked).
func verifyClient(raw [][]byte, roots *x509.CertPool, crls []*x509.RevocationList, now time.Time) error {
	if len(raw) == 0 {
		return errors.New("the client sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		certs[i] = c
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return checkRevoked(chains, crls, now)
}

// pemBlocks decodes every PEM block of b, which must all be of type
// want. Go's pem.Decode skips a block it cannot decode (broken base64, a
// missing END line) and goes on; here that, or a block of another type,
// is an error, as GnuTLS (QEMU) refuses such a file: a damaged entry of
// a revocation list must not let a revoked client in. Text around the
// blocks (certtool and openssl print some) is allowed.
func pemBlocks(b []byte, want, path string) ([]*pem.Block, error) {
	var out []*pem.Block
	begins := bytes.Count(b, []byte("-----BEGIN "))
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		if blk.Type != want {
			return nil, fmt.Errorf("TLS credentials: %s: a %q block (want %q)", path, blk.Type, want)
		}
		out = append(out, blk)
	}
	if len(out) != begins {
		return nil, fmt.Errorf("TLS credentials: %s: %d of its %d PEM blocks do not decode", path, begins-len(out), begins)
	}
	return out, nil
}

// loadCRLs reads the revocation lists of path, if it exists; each must be
// signed by one of the CAs.
func loadCRLs(path string, cas []*x509.Certificate) ([]*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("TLS credentials: %w", err)
	}
	blks, err := pemBlocks(b, "X509 CRL", path)
	if err != nil {
		return nil, err
	}
	var out []*x509.RevocationList
	for _, blk := range blks {
		rl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("TLS credentials: %s: %w", path, err)
		}
		signed := false
		for _, ca := range cas {
			signed = signed || rl.CheckSignatureFrom(ca) == nil
		}
		if !signed {
			return nil, fmt.Errorf("TLS credentials: %s: a revocation list no CA of ca-cert.pem signed", path)
		}
		out = append(out, rl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("TLS credentials: %s: no revocation list", path)
	}
	return out, nil
}

// checkRevoked fails if a certificate of a verified chain is on a
// revocation list of its issuer, or if a list is past its next update
// (GnuTLS then reports the revocation data superseded, and QEMU refuses
// every client until the list is renewed).
func checkRevoked(chains [][]*x509.Certificate, crls []*x509.RevocationList, now time.Time) error {
	for _, rl := range crls {
		if !rl.NextUpdate.IsZero() && now.After(rl.NextUpdate) {
			return fmt.Errorf("the revocation list of %q expired at %v", rl.Issuer, rl.NextUpdate)
		}
	}
	for _, chain := range chains {
		for _, c := range chain {
			for _, rl := range crls {
				if string(rl.RawIssuer) != string(c.RawIssuer) {
					continue
				}
				for _, e := range rl.RevokedCertificateEntries {
					if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
						return fmt.Errorf("certificate of %q has been revoked", c.Subject)
					}
				}
			}
		}
	}
	return nil
}

// tlsObject reads a --object of QEMU's TLS types, as qemu-nbd takes
// them: tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]
// (or qom-type=tls-creds-x509,...), for --tls-creds=ID. ok is false when
// the object is of another type (a secret). QEMU's other TLS credential
// types (anonymous, PSK) are refused.
func tlsObject(s string) (id string, tc tlsCreds, ok bool, err error) {
	parts := optstr.Split(s)
	typ := ""
	if len(parts) > 0 {
		typ = parts[0]
		if k, v, kv := strings.Cut(typ, "="); kv {
			if k != "qom-type" {
				return "", tc, false, nil
			}
			typ = v
		}
		parts = parts[1:]
	}
	if !strings.HasPrefix(typ, "tls-creds") {
		return "", tc, false, nil
	}
	if typ != "tls-creds-x509" {
		return "", tc, true, fmt.Errorf("--object %s: only tls-creds-x509 TLS credentials are supported", typ)
	}
	tc.verifyPeer = true
	endpoint := "client" // QEMU's default, refused below as qemu-nbd refuses it
	for _, e := range parts {
		k, v, _ := strings.Cut(e, "=")
		switch k {
		case "id":
			id = v
		case "dir":
			tc.dir = v
		case "endpoint":
			endpoint = v
		case "verify-peer":
			var ok bool
			if tc.verifyPeer, ok = onOff(v); !ok {
				return "", tc, true, fmt.Errorf("--object tls-creds-x509: invalid verify-peer %q (on or off)", v)
			}
		default:
			return "", tc, true, fmt.Errorf("--object tls-creds-x509: unsupported property %q (id, dir, endpoint, verify-peer)", k)
		}
	}
	switch {
	case id == "":
		return "", tc, true, errors.New("--object tls-creds-x509: no id")
	case tc.dir == "":
		return "", tc, true, errors.New("--object tls-creds-x509: no dir")
	case endpoint != "server":
		return "", tc, true, errors.New("--object tls-creds-x509: Expected TLS credentials for a server endpoint (endpoint=server)")
	}
	return id, tc, true, nil
}

// onOff parses a QEMU boolean property (on/yes/true, off/no/false); ok
// is false for anything else.
func onOff(v string) (val, ok bool) {
	switch v {
	case "on", "yes", "true":
		return true, true
	case "off", "no", "false":
		return false, true
	}
	return false, false
}
