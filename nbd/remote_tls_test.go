package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestClient_TLS: a client with TLS upgrades the connection with
// STARTTLS and reads and writes through it; the server's certificate
// is verified against the CA and the name; a client without TLS, or
// one that trusts another CA, is refused.
func TestClient_TLS(t *testing.T) {
	p := testkit.WritePKI(t, t.TempDir(), false)
	kp, err := tls.LoadX509KeyPair(filepath.Join(p.Server, "server-cert.pem"), filepath.Join(p.Server, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	mem := newMem(memdev.Options{})
	s := serveTest(t, &Server{Exports: []*Export{{Dev: mem}}, TLS: &tls.Config{Certificates: []tls.Certificate{kp}}, Logf: t.Logf})
	roots := x509.NewCertPool()
	roots.AddCert(p.CA.Cert)
	addr := Address{Network: "unix", Addr: s.addr}

	c, err := Dial(context.Background(), addr, ClientOptions{TLS: &tls.Config{RootCAs: roots, ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(64<<10, 4)
	if err := c.Writev(0, [][]byte{data}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := block.ReadAt(c, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read over TLS: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = Dial(context.Background(), addr, ClientOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "TLS negotiation required before option 7 (go)") {
		t.Fatalf("no TLS against a TLS server: %v", err)
	}
	_, err = Dial(context.Background(), addr, ClientOptions{TLS: &tls.Config{RootCAs: roots, ServerName: "elsewhere"}})
	if err == nil || !strings.Contains(err.Error(), "TLS handshake failed") {
		t.Fatalf("wrong server name: %v", err)
	}
	other := x509.NewCertPool()
	other.AddCert(testkit.NewCA(t, "stranger", false).Cert)
	_, err = Dial(context.Background(), addr, ClientOptions{TLS: &tls.Config{RootCAs: other, ServerName: "localhost"}})
	if err == nil || !strings.Contains(err.Error(), "TLS handshake failed") {
		t.Fatalf("untrusted server: %v", err)
	}
}
