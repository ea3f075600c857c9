package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for the tests of TLS (qnbd's server,
// the NBD client): credentials in QEMU's tls-creds-x509 layout that
// QEMU's tools take too.
type CA struct {
	Cert   *x509.Certificate
	Key    crypto.Signer
	RSA    bool   // RSA keys, signed with PKCS#1 v1.5 (certtool's and openssl's default); else ECDSA P-256
	PEM    []byte // the certificate, PEM-encoded: ca-cert.pem
	serial int64
}

// NewKey is a key of a CA's kind (RSA 2048 or ECDSA P-256).
func NewKey(t *testing.T, useRSA bool) crypto.Signer {
	t.Helper()
	var key crypto.Signer
	var err error
	if useRSA {
		key, err = rsa.GenerateKey(crand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// NewCA is a CA named name, with RSA keys if useRSA, else ECDSA.
func NewCA(t *testing.T, name string, useRSA bool) *CA {
	t.Helper()
	key := NewKey(t, useRSA)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, RSA: useRSA, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}
}

// Issue makes a certificate the CA signs, for a server (localhost and
// 127.0.0.1) or a client, with the key usage and purpose QEMU's
// credential checks want; it returns the certificate and key in PEM.
func (ca *CA) Issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	return ca.IssueSubject(t, pkix.Name{CommonName: name}, server)
}

// IssueSubject is Issue for a certificate of subject subj.
func (ca *CA) IssueSubject(t *testing.T, subj pkix.Name, server bool) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	ca.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: subj,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return ca.sign(t, tmpl)
}

// IssueServerNames is a server certificate of subject subj whose
// subject alternative names are exactly dnsNames and ips: none at all
// makes one named by its CN alone, as older PKIs made them.
func (ca *CA) IssueServerNames(t *testing.T, subj pkix.Name, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	ca.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: subj,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: dnsNames, IPAddresses: ips}
	return ca.sign(t, tmpl)
}

// sign makes the certificate tmpl with a new key, signed by the CA.
func (ca *CA) sign(t *testing.T, tmpl *x509.Certificate) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key := NewKey(t, ca.RSA)
	if ca.RSA {
		tmpl.SignatureAlgorithm = x509.SHA256WithRSA
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), cert
}

// CRL is a revocation list of the CA with the given certificates.
func (ca *CA) CRL(t *testing.T, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour)}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(crand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// WriteFiles writes files (name: contents) into dir, made if needed.
func WriteFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// PKI is a set of credential directories in QEMU's tls-creds-x509
// layout:
//
//	Server  ca-cert.pem, server-cert.pem, server-key.pem, and a client
//	        certificate of the same CA (client-cert.pem, client-key.pem):
//	        a server's credentials and a verified client's at once
//	NoCert  ca-cert.pem only: a client that trusts the server but has
//	        no certificate of its own
//	Other   ca-cert.pem and a client certificate from another CA
type PKI struct {
	Server, NoCert, Other string
	CA                    *CA
	Client                *x509.Certificate // the Server dir's
}

// WritePKI writes the PKI's directories under dir, with RSA keys and
// PKCS#1 v1.5 signatures if useRSA.
func WritePKI(t *testing.T, dir string, useRSA bool) *PKI {
	t.Helper()
	ca, other := NewCA(t, "qring test CA", useRSA), NewCA(t, "another CA", useRSA)
	p := &PKI{Server: filepath.Join(dir, "server"), NoCert: filepath.Join(dir, "nocert"), Other: filepath.Join(dir, "other"), CA: ca}
	scert, skey, _ := ca.Issue(t, "localhost", true)
	ccert, ckey, client := ca.Issue(t, "client", false)
	p.Client = client
	WriteFiles(t, p.Server, map[string][]byte{"ca-cert.pem": ca.PEM, "server-cert.pem": scert, "server-key.pem": skey,
		"client-cert.pem": ccert, "client-key.pem": ckey})
	WriteFiles(t, p.NoCert, map[string][]byte{"ca-cert.pem": ca.PEM})
	ocert, okey, _ := other.Issue(t, "intruder", false)
	WriteFiles(t, p.Other, map[string][]byte{"ca-cert.pem": ca.PEM, "client-cert.pem": ocert, "client-key.pem": okey})
	return p
}
