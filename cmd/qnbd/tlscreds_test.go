package main

import (
	"bytes"
	"crypto"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// The test PKI is testkit's (pki.go), under the names these tests use.
type testCA = testkit.CA
type testPKI = testkit.PKI

func newKey(t *testing.T, useRSA bool) crypto.Signer { return testkit.NewKey(t, useRSA) }
func newTestCA(t *testing.T, name string) *testCA    { return testkit.NewCA(t, name, false) }
func newTestCAKind(t *testing.T, name string, useRSA bool) *testCA {
	return testkit.NewCA(t, name, useRSA)
}
func writeFiles(t *testing.T, dir string, files map[string][]byte) { testkit.WriteFiles(t, dir, files) }
func writePKI(t *testing.T, dir string) *testPKI                   { return testkit.WritePKI(t, dir, false) }
func writePKIKind(t *testing.T, dir string, useRSA bool) *testPKI {
	return testkit.WritePKI(t, dir, useRSA)
}

// handshake runs a TLS handshake between the server configuration and a
// client presenting the certificate of dir (if any) and returns the
// server's verdict. The client reads after its handshake, so that a
// refusal in TLS 1.3 (which the server sends after the client finished)
// reaches it.
func handshake(t *testing.T, cfg *tls.Config, caPEM []byte, clientDir string) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	ccfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if clientDir != "" {
		kp, err := tls.LoadX509KeyPair(filepath.Join(clientDir, "client-cert.pem"), filepath.Join(clientDir, "client-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		// Present it even when the server asks for another CA's (a
		// client picking by the server's list would send none).
		ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	done := make(chan error, 1)
	go func() {
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(nc, ccfg)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Read(make([]byte, 1)) // the server's byte, or its alert
		done <- err
	}()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	sc := tls.Server(nc, cfg)
	serr := sc.Handshake()
	if serr == nil {
		sc.Write([]byte{1})
	}
	sc.Close()
	if cerr := <-done; (cerr == nil) != (serr == nil) {
		t.Fatalf("server: %v; client: %v", serr, cerr)
	}
	return serr
}

// TestTLSCredsVerifyPeer: --tls-creds=DIR verifies clients as QEMU's
// tls-creds-x509 does by default (verify-peer=on): a certificate the CA
// of ca-cert.pem signs is accepted; none, one from another CA, or one
// that ca-crl.pem revokes is refused. verify-peer=off accepts any
// client, and then needs no ca-cert.pem.
func TestTLSCredsVerifyPeer(t *testing.T) {
	p := writePKI(t, t.TempDir())
	cfgOf := func(v string) (*tls.Config, error) { t.Helper(); return credsConfig(t, v) }
	cfg, err := cfgOf(p.Server)
	if err != nil {
		t.Fatal(err)
	}
	// The certificate is required, and verified by qnbd (tlscreds.go:
	// the request names no CA, for GnuTLS clients).
	if cfg.ClientAuth != tls.RequireAnyClientCert || cfg.VerifyConnection == nil || cfg.ClientCAs != nil {
		t.Fatalf("--tls-creds=DIR: ClientAuth %v, VerifyConnection set %v, ClientCAs %v", cfg.ClientAuth, cfg.VerifyConnection != nil, cfg.ClientCAs)
	}
	for _, tc := range []struct {
		name, dir, err string
	}{{"verified client", p.Server, ""}, {"no certificate", "", "didn't provide a certificate"}, {"another CA", p.Other, "unknown authority"}} {
		if err := handshake(t, cfg, p.CA.PEM, tc.dir); (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: handshake: %v, want %q", tc.name, err, tc.err)
		}
	}
	for _, v := range []string{p.Server + ",verify-peer=off", "dir=" + p.Server + ",verify-peer=no"} {
		off, err := cfgOf(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{"", p.Other, p.Server} {
			if err := handshake(t, off, p.CA.PEM, dir); err != nil {
				t.Errorf("%s: client %q refused: %v", v, dir, err)
			}
		}
	}

	// A revoked client certificate.
	writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": p.CA.CRL(t, p.Client)})
	if cfg, err = cfgOf(p.Server); err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, p.CA.PEM, p.Server); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked client: %v", err)
	}
	writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": p.CA.CRL(t)}) // an empty list
	if cfg, err = cfgOf(p.Server); err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, p.CA.PEM, p.Server); err != nil {
		t.Errorf("client not revoked: %v", err)
	}

	// Bad values; ca-cert.pem is needed unless verify-peer=off; a CRL
	// must come from the CA.
	writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": newTestCA(t, "x").CRL(t)})
	if _, err := cfgOf(p.Server); err == nil || !strings.Contains(err.Error(), "ca-crl.pem") {
		t.Errorf("CRL of another CA: %v", err)
	}
	os.Remove(filepath.Join(p.Server, "ca-crl.pem"))
	os.Remove(filepath.Join(p.Server, "ca-cert.pem"))
	if _, err := cfgOf(p.Server); err == nil || !strings.Contains(err.Error(), "verify-peer=off") {
		t.Errorf("no ca-cert.pem: %v", err)
	}
	if _, err := cfgOf(p.Server + ",verify-peer=off"); err != nil {
		t.Errorf("no ca-cert.pem, verify-peer=off: %v", err)
	}
	for _, v := range []string{p.Server + ",verify-peer=maybe", p.Server + ",endpoint=client", "verify-peer=off"} {
		if _, err := cfgOf(v); err == nil {
			t.Errorf("--tls-creds=%s accepted", v)
		}
	}
}

// Found in review of the above: files that could let a revoked or any
// client in are refused, as GnuTLS (QEMU) refuses them.
func TestTLSCredsFailClosed(t *testing.T) {
	cfgOf := func(dir string) (*tls.Config, error) { t.Helper(); return credsConfig(t, dir) }
	p := writePKI(t, t.TempDir())

	// A damaged second CRL, the one revoking the client: pem.Decode
	// skipped it and the client got in.
	bad := p.CA.CRL(t, p.Client)
	bad[bytes.IndexByte(bad, '\n')+10] = '!'
	writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": append(p.CA.CRL(t), bad...)})
	if cfg, err := cfgOf(p.Server); err == nil {
		t.Errorf("a damaged CRL block was accepted (the revoked client's handshake: %v)", handshake(t, cfg, p.CA.PEM, p.Server))
	}
	// A block of another type in a credentials file.
	writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": append(p.CA.CRL(t), p.CA.PEM...)})
	if _, err := cfgOf(p.Server); err == nil {
		t.Error("a CERTIFICATE block in ca-crl.pem was accepted")
	}
	os.Remove(filepath.Join(p.Server, "ca-crl.pem"))
	ca := append(append([]byte(nil), p.CA.PEM...), []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")...)
	writeFiles(t, p.Server, map[string][]byte{"ca-cert.pem": ca})
	if _, err := cfgOf(p.Server); err == nil {
		t.Error("a damaged block in ca-cert.pem was accepted")
	}
	writeFiles(t, p.Server, map[string][]byte{"ca-cert.pem": p.CA.PEM})

	// A revocation list past its next update: QEMU refuses every client.
	tmpl := &x509.RevocationList{Number: big.NewInt(7), ThisUpdate: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-24 * time.Hour)}
	der, err := x509.CreateRevocationList(crand.Reader, tmpl, p.CA.Cert, p.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})})
	cfg, err := cfgOf(p.Server)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, p.CA.PEM, p.Server); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a client against an expired revocation list: %v", err)
	}
}

// --tls-creds (or --tls-cert/--tls-key) given with an empty value, as an
// unset variable in a script gives, served without TLS.
func TestTLSEmptyValueRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--tls-creds=", "img.qcow2"}, {"--tls-creds", "", "img.qcow2"},
		{"--tls-cert=", "--tls-key=", "img.qcow2"},
	} {
		f, err := parseFlags(args)
		if err != nil {
			continue
		}
		if c, err := configure(f); err == nil {
			t.Errorf("%q accepted (TLS %v)", args, c.tls != nil)
		}
	}
}

// credsConfig is the TLS configuration qnbd builds from --tls-creds v.
func credsConfig(t *testing.T, v string) (*tls.Config, error) {
	t.Helper()
	f, err := parseFlags([]string{"--tls-creds", v, "img.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := configure(f)
	if err != nil {
		return nil, err
	}
	return c.tls, nil
}

// A client resuming a TLS session is checked again (found by review: the
// checks ran in VerifyPeerCertificate, which resumption skips, so a
// client holding a ticket got in after the revocation list expired,
// when every full handshake is refused).
//
// The list expires between the handshakes that get the client its
// ticket and the resumption without waiting for a clock: the first two
// run against the configuration of a list that is current, the last
// against the configuration of the same directory once its list is past
// its next update, the two sharing their session ticket keys (as one
// server's configuration before and after its list expired). The test
// used to give the list a next update 2 s ahead and sleep past it, and
// a loaded machine took longer than that for the first two handshakes.
// The server's VerifyConnection records that the refused handshake was
// a resumption.
func TestTLSCredsResumedSessionChecked(t *testing.T) {
	p := writePKI(t, t.TempDir())
	var keys [32]byte // the session ticket keys of both configurations
	crand.Read(keys[:])
	var sawResumed []bool // DidResume of each handshake VerifyConnection saw
	// serverCfg is qnbd's configuration for p.Server with a revocation
	// list whose next update is next.
	serverCfg := func(next time.Time) *tls.Config {
		tmpl := &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: next.Add(-time.Hour), NextUpdate: next}
		der, err := x509.CreateRevocationList(crand.Reader, tmpl, p.CA.Cert, p.CA.Key)
		if err != nil {
			t.Fatal(err)
		}
		writeFiles(t, p.Server, map[string][]byte{"ca-crl.pem": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})})
		cfg, err := credsConfig(t, p.Server)
		if err != nil {
			t.Fatal(err)
		}
		cfg.SetSessionTicketKeys([][32]byte{keys})
		verify := cfg.VerifyConnection
		if verify == nil {
			t.Fatal("the configuration has no VerifyConnection")
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			sawResumed = append(sawResumed, cs.DidResume) // one handshake at a time
			return verify(cs)
		}
		return cfg
	}
	current := serverCfg(time.Now().Add(24 * time.Hour))
	expired := serverCfg(time.Now().Add(-time.Hour))
	kp, err := tls.LoadX509KeyPair(filepath.Join(p.Server, "client-cert.pem"), filepath.Join(p.Server, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CA.PEM)
	cache := tls.NewLRUClientSessionCache(4)
	connect := func(cfg *tls.Config) (resumed bool, err error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		srv := make(chan error, 1)
		go func() {
			nc, err := l.Accept()
			if err != nil {
				srv <- err
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(60 * time.Second)) // a hang guard
			sc := tls.Server(nc, cfg)
			err = sc.Handshake()
			if err == nil {
				sc.Write([]byte{1})
			}
			srv <- err
		}()
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(60 * time.Second))
		tc := tls.Client(nc, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{kp}, ClientSessionCache: cache})
		if err := tc.Handshake(); err == nil {
			_, err = tc.Read(make([]byte, 1)) // the server's byte (and the TLS 1.3 ticket), or its alert
			resumed = tc.ConnectionState().DidResume
		}
		return resumed, <-srv
	}
	if _, err := connect(current); err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	if resumed, err := connect(current); err != nil || !resumed {
		t.Fatalf("second handshake: resumed %v, %v (the test needs a resumption)", resumed, err)
	}
	sawResumed = nil
	if resumed, err := connect(expired); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("resumption after the revocation list expired: resumed %v, %v; want refused", resumed, err)
	}
	if len(sawResumed) != 1 || !sawResumed[0] {
		t.Fatalf("the refused handshake was not a resumption (VerifyConnection saw DidResume %v): the test needs one", sawResumed)
	}
}

// TestTLSObject: qemu-nbd's TLS options, --object
// tls-creds-x509,id=ID,dir=DIR,endpoint=server and --tls-creds=ID, serve
// over TLS as --tls-creds=DIR does (verify-peer included); a client
// endpoint, another credential type or an unknown property is refused at
// start-up.
func TestTLSObject(t *testing.T) {
	need(t, "qemu-img", "nbdinfo")
	dir, img := create(t, "1M")
	p := writePKI(t, dir)
	obj := "tls-creds-x509,id=tls0,endpoint=server,dir=" + p.Server
	s := startUnix(t, dir, "t", "--object", obj, "--tls-creds", "tls0", img)
	tlsURI := func(creds string) string {
		return strings.Replace(s.uri, "nbd+unix://", "nbds+unix://", 1) + "&tls-certificates=" + creds
	}
	if out := sh(t, "nbdinfo", tlsURI(p.Server)); !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	for _, uri := range []string{s.uri, tlsURI(p.NoCert)} {
		if out, err := exec.Command("nbdinfo", uri).CombinedOutput(); err == nil {
			t.Errorf("nbdinfo %s succeeded:\n%s", uri, out)
		}
	}
	s.stop()
	s = startUnix(t, dir, "t", "--object", obj+",verify-peer=off", "--tls-creds", "tls0", img)
	if out := sh(t, "nbdinfo", tlsURI(p.NoCert)); !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo without a client certificate, verify-peer=off:\n%s", out)
	}
	s.stop()
	for _, o := range []string{"tls-creds-x509,id=tls0,dir=" + p.Server, "tls-creds-x509,id=tls0,endpoint=client,dir=" + p.Server,
		"tls-creds-psk,id=tls0,endpoint=server,dir=" + p.Server, obj + ",priority=NORMAL"} {
		var stderr bytes.Buffer
		if code := run([]string{"--object", o, "--tls-creds", "tls0", "-k", filepath.Join(dir, "x.sock"), img}, io.Discard, &stderr); code != 1 {
			t.Errorf("--object %s: exit %d\n%s", o, code, stderr.String())
		}
	}
}

// An encrypted server key is refused at startup with the files named, in
// qemu-nbd's words ("Cannot load certificate 'C' & key 'K'"), and says it
// is encrypted; it said only "tls: failed to parse private key".
func TestTLSCredsEncryptedKey(t *testing.T) {
	p := writePKI(t, t.TempDir())
	keyPath := filepath.Join(p.Server, "server-key.pem")
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	//lint:ignore SA1019 a legacy encrypted PEM block, as openssl -traditional writes one
	enc, err := x509.EncryptPEMBlock(crand.Reader, "EC PRIVATE KEY", blk.Bytes, []byte("secret"), x509.PEMCipherAES128) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, p.Server, map[string][]byte{"server-key.pem": pem.EncodeToMemory(enc)})
	_, err = credsConfig(t, p.Server)
	if err == nil || !strings.Contains(err.Error(), "Cannot load certificate '"+filepath.Join(p.Server, "server-cert.pem")+"' & key '"+keyPath+"'") ||
		!strings.Contains(err.Error(), "encrypted") {
		t.Errorf("an encrypted key: %v", err)
	}
}

// A credentials directory missing its files is refused naming the first
// missing one in QEMU's order and words ("Unable to access credentials
// DIR/ca-cert.pem: No such file or directory"); qnbd named
// server-cert.pem in Go's words.
func TestTLSCredsMissingFileLikeQemu(t *testing.T) {
	dir := t.TempDir()
	_, err := credsConfig(t, dir)
	want := "Unable to access credentials " + filepath.Join(dir, "ca-cert.pem") + ": No such file or directory"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("an empty directory: %v\nwant %s", err, want)
	}
	p := writePKI(t, t.TempDir())
	os.Remove(filepath.Join(p.Server, "server-key.pem"))
	_, err = credsConfig(t, p.Server)
	if want := "Unable to access credentials " + filepath.Join(p.Server, "server-key.pem") + ": No such file or directory"; err == nil || err.Error() != want {
		t.Errorf("no server-key.pem: %v\nwant %s", err, want)
	}
}
