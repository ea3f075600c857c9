package nbd

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
)

func selfSigned(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "qnbd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"qnbd"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestTLS: with TLS configured, options other than STARTTLS are refused
// with NBD_REP_ERR_TLS_REQD; after STARTTLS and the handshake the
// negotiation and transmission go on encrypted.
func TestTLS(t *testing.T) {
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	mem := newMem(memdev.Options{})
	s := serveTest(t, &Server{Exports: []*Export{{Dev: mem}}, TLS: cfg, Logf: t.Logf})
	c := dial(t, s)
	c.greet()
	if rs := c.opt(optGo, infoData("")); rs[0].typ != repErrTLSReqd {
		t.Fatalf("GO before STARTTLS: 0x%x", rs[0].typ)
	}
	if rs := c.opt(optList, nil); rs[0].typ != repErrTLSReqd {
		t.Fatalf("LIST before STARTTLS: 0x%x", rs[0].typ)
	}
	if rs := c.opt(optStartTLS, nil); rs[0].typ != repAck {
		t.Fatalf("STARTTLS: 0x%x", rs[0].typ)
	}
	tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.nc, c.r = tc, bufio.NewReader(tc)
	if rs := c.opt(optStartTLS, nil); rs[0].typ != repErrInvalid {
		t.Fatalf("second STARTTLS: 0x%x", rs[0].typ)
	}
	if rs := c.opt(optStructuredReply, nil); rs[0].typ != repAck {
		t.Fatal("structured replies over TLS")
	}
	c.opt(optGo, infoData(""))
	if code, _, _ := c.do(cmdWrite, 0, 0, 3, []byte{1, 2, 3}); code != 0 {
		t.Fatalf("write over TLS: %d", code)
	}
	if code, data, _ := c.do(cmdRead, 0, 0, 3, nil); code != 0 || string(data) != "\x01\x02\x03" {
		t.Fatalf("read over TLS: %d %v", code, data)
	}

	// EXPORT_NAME before TLS closes the connection.
	c = dial(t, s)
	c.greet()
	c.sendOpt(optExportName, nil)
	if !c.closed() {
		t.Fatal("EXPORT_NAME before TLS: connection open")
	}
}
