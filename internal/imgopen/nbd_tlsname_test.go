package imgopen

import (
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

func TestHostnameMatches(t *testing.T) {
	for _, c := range []struct {
		name, host string
		want       bool
	}{
		{"localhost", "localhost", true},
		{"LocalHost", "localHOST", true},
		{"localhost", "localhost.", true},
		{"localhost", "localhos", false},
		{"localhost", "", false},
		{"", "", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "A.EXAMPLE.COM", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "a.b.example.com", false},
		{"*.com", "example.com", false},
		{"*.example", "a.example", false},
		{"a*.example.com", "ab.example.com", false},
		{"127.0.0.1", "127.0.0.1", false},
		{"::1", "::1", false},
	} {
		if got := hostnameMatches(c.name, c.host); got != c.want {
			t.Errorf("hostnameMatches(%q, %q) = %v", c.name, c.host, got)
		}
	}
}

// TestVerifyServer: the CN is taken only where GnuTLS takes it, and
// only after the chain is verified.
func TestVerifyServer(t *testing.T) {
	ca, other := testkit.NewCA(t, "ca", false), testkit.NewCA(t, "other", false)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	state := func(certPEM []byte) tls.ConnectionState {
		b, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	cnOnly, _, _ := ca.IssueServerNames(t, pkix.Name{CommonName: "srv.example.com"}, nil, nil)
	stranger, _, _ := other.IssueServerNames(t, pkix.Name{CommonName: "srv.example.com"}, nil, nil)
	withSAN, _, _ := ca.IssueServerNames(t, pkix.Name{CommonName: "srv.example.com"}, []string{"other.example.com"}, nil)
	withIP, _, _ := ca.IssueServerNames(t, pkix.Name{CommonName: "srv.example.com"}, nil, []net.IP{net.IPv4(10, 0, 0, 1)})
	client, _, _ := ca.Issue(t, "srv.example.com", false)
	noSubject, _, _ := ca.IssueServerNames(t, pkix.Name{}, nil, nil)
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	twoCN, _, _ := ca.IssueServerNames(t, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: cn, Value: "srv.example.com"}, {Type: cn, Value: "srv2.example.com"}}}, nil, nil)
	for _, c := range []struct {
		what string
		cert []byte
		host string
		ok   bool
	}{
		{"CN only", cnOnly, "srv.example.com", true},
		{"CN only, another name", cnOnly, "srv2.example.com", false},
		{"another CA", stranger, "srv.example.com", false},
		{"a DNS SAN", withSAN, "srv.example.com", false},
		{"a DNS SAN, its name", withSAN, "other.example.com", true},
		{"an IP SAN", withIP, "srv.example.com", false},
		{"an IP SAN, its address", withIP, "10.0.0.1", true},
		{"a client certificate", client, "srv.example.com", false},
		{"no subject", noSubject, "srv.example.com", false},
		{"two CNs", twoCN, "srv.example.com", false},
		{"two CNs, the other", twoCN, "srv2.example.com", false},
	} {
		err := verifyServer(roots, c.host)(state(c.cert))
		if (err == nil) != c.ok {
			t.Errorf("%s, hostname %s: %v", c.what, c.host, err)
		}
		if r := (*certRefusal)(nil); errors.As(err, &r) && !errors.As(err, new(*tls.CertificateVerificationError)) {
			t.Errorf("%s: %v does not unwrap to Go's account", c.what, err)
		}
	}
	// A CA whose name constraints the CN breaks: Go checks them against
	// SANs only, so the CN is not taken under any constrained CA.
	key := testkit.NewKey(t, false)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "constrained"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		PermittedDNSDomainsCritical: true, PermittedDNSDomains: []string{"good.example"}}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ccert, _ := x509.ParseCertificate(der)
	cca := &testkit.CA{Cert: ccert, Key: key}
	croots := x509.NewCertPool()
	croots.AddCert(ccert)
	for _, c := range []struct {
		cn, host string
		san      bool
		ok       bool
	}{
		{"bad.example", "bad.example", false, false},
		{"a.good.example", "a.good.example", false, false}, // refused too: the safe side
		{"a.good.example", "a.good.example", true, true},
		{"bad.example", "bad.example", true, false},
	} {
		var dns []string
		if c.san {
			dns = []string{c.cn}
		}
		certPEM, _, _ := cca.IssueServerNames(t, pkix.Name{CommonName: c.cn}, dns, nil)
		err := verifyServer(croots, c.host)(state(certPEM))
		if (err == nil) != c.ok {
			t.Errorf("constrained CA, CN %s (SAN %v): %v", c.cn, c.san, err)
		}
	}
	if err := verifyServer(roots, "x")(tls.ConnectionState{}); err == nil {
		t.Error("no certificate: verified")
	}
}
