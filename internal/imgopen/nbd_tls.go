package imgopen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/qring/qring/nbd"
)

// nbdTLS is the TLS configuration of an nbd node's tls-creds (the id of
// a tls-creds-x509 object of the spec's Secrets) and tls-hostname, as
// QEMU's nbd client uses them: the CA of ca-cert.pem verifies the
// server (unless verify-peer=off), named tls-hostname, else the host of
// a TCP address (over a Unix socket tls-hostname is needed, as QEMU's
// "No hostname for certificate validation"). client-cert.pem and client-key.pem, when both
// are there, are the client's certificate. nil without tls-creds.
func (b *builder) nbdTLS(n *node, a nbd.Address) (*tls.Config, error) {
	id, err := n.str("tls-creds", "")
	if err != nil {
		return nil, err
	}
	hostname, err := n.str("tls-hostname", "")
	if err != nil || id == "" {
		return nil, err
	}
	c, err := b.def.Secrets.TLS(id)
	if err != nil {
		return nil, err
	}
	if c.Endpoint != "client" {
		return nil, errors.New("Expected TLS credentials for a client endpoint")
	}
	path := func(f string) string { return filepath.Join(c.Dir, f) }
	ca, err := os.ReadFile(path("ca-cert.pem"))
	if err != nil {
		return nil, fmt.Errorf("Unable to access credentials %s: %v", path("ca-cert.pem"), errnoWords(err))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("Unable to import CA certificate list %s", path("ca-cert.pem"))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	certFile, keyFile := path("client-cert.pem"), path("client-key.pem")
	if _, err := os.Stat(certFile); err == nil {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("Unable to load client certificate %s: %v", certFile, err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	if hostname == "" && a.Network == "tcp" {
		hostname, _, _ = net.SplitHostPort(a.Addr)
	}
	switch {
	case !c.VerifyPeer:
		cfg.InsecureSkipVerify = true
	case hostname == "":
		// QEMU checks the certificate's name always: over a Unix
		// socket it needs tls-hostname.
		return nil, errors.New("No hostname for certificate validation")
	default:
		// ServerName for SNI; the check is verifyServer's, GnuTLS's
		// (a common name counts when there is no SAN).
		cfg.ServerName = hostname
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = verifyServer(roots, hostname)
	}
	return cfg, nil
}

// errnoWords is a file error's errno in strerror's words.
func errnoWords(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		s := pe.Err.Error()
		if s != "" && s[0] >= 'a' && s[0] <= 'z' {
			s = string(s[0]-'a'+'A') + s[1:]
		}
		return s
	}
	return err.Error()
}
