package imgopen

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"net"
	"strings"
)

// verifyServer verifies an NBD server's certificate as QEMU's client
// does through GnuTLS (gnutls_certificate_verify_peers2, then
// gnutls_x509_crt_check_hostname): the chain up to roots, for a TLS
// server, then hostname against the certificate's subject alternative
// names, or, when it has neither a DNS name nor an IP address there,
// against its one common name (not under a CA with DNS name
// constraints, which Go checks against SANs only). Go's own check (tls.Config.ServerName)
// has not taken a common name since Go 1.15: a server certificate
// with a CN and no SAN, which QEMU's tools accept, was refused.
//
// It is a tls.Config.VerifyConnection, set with InsecureSkipVerify
// (which only turns Go's check off for this one to run in its place):
// it runs on every handshake, resumed or not.
func verifyServer(roots *x509.CertPool, hostname string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the server sent no certificate")
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		// KeyUsages empty: a server's (ExtKeyUsageServerAuth), as Go's
		// own check.
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		if err != nil {
			err = &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			if errors.As(err, new(x509.UnknownAuthorityError)) {
				return &certRefusal{"The certificate hasn't got a known issuer", err}
			}
			return err
		}
		err = leaf.VerifyHostname(hostname)
		if err == nil {
			return nil
		}
		if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
			// Go checks a CA's name constraints against SANs only: a
			// CN under a constrained CA is not taken (GnuTLS checks it
			// against them; refusing is the safe side of that).
			if dnsConstrained(chains) {
				return &certRefusal{"The certificate is not trusted",
					&tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}}
			}
			if cn, ok := onlyCommonName(leaf); ok && hostnameMatches(cn, hostname) {
				return nil
			}
		}
		return &certRefusal{"Certificate does not match the hostname " + hostname,
			&tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}}
	}
}

// certRefusal is a server certificate refused, in QEMU's words
// (qcrypto_tls_session_check_certificate's) for the refusals it words
// alike: an unknown issuer, a name that does not match. It is the
// whole error of an open (not "TLS handshake failed: ..."); Unwrap
// gives Go's account.
type certRefusal struct {
	msg string
	err error
}

func (e *certRefusal) Error() string { return e.msg }
func (e *certRefusal) Unwrap() error { return e.err }

// dnsConstrained reports whether a certificate of the chains carries
// DNS name constraints.
func dnsConstrained(chains [][]*x509.Certificate) bool {
	for _, ch := range chains {
		for _, c := range ch {
			if len(c.PermittedDNSDomains) > 0 || len(c.ExcludedDNSDomains) > 0 {
				return true
			}
		}
	}
	return false
}

// oidCommonName is X.520's commonName attribute.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// onlyCommonName is the certificate subject's common name when it has
// exactly one (GnuTLS takes none when there are several).
func onlyCommonName(c *x509.Certificate) (string, bool) {
	var cn string
	n := 0
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oidCommonName) {
			n++
			cn, _ = a.Value.(string)
		}
	}
	return cn, n == 1 && cn != ""
}

// hostnameMatches says whether a certificate's common name matches
// hostname as GnuTLS matches it, case-insensitively, a leading "*."
// standing for one label of a name of at least three ("*.example.com"
// matches "a.example.com", not "example.com" nor "a.b.example.com";
// "*.com" and "*.example" match nothing); an IP address is never
// matched by a common name. Stricter than GnuTLS in one case: its
// wildcard matches an empty label too (".example.com"). A trailing dot
// of hostname is dropped, as Go's check of the SANs drops it.
func hostnameMatches(name, hostname string) bool {
	hostname = strings.TrimSuffix(hostname, ".")
	if name == "" || hostname == "" || net.ParseIP(hostname) != nil {
		return false
	}
	name, hostname = strings.ToLower(name), strings.ToLower(hostname)
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		label, tail, ok := strings.Cut(hostname, ".")
		return ok && label != "" && strings.Contains(rest, ".") && tail == rest
	}
	return name == hostname
}
