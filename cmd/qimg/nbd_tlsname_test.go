package main

import (
	"crypto/x509/pkix"
	"net"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestNBDClient_TLSNamesLikeQemu: the server certificate's name is
// checked against tls-hostname as QEMU's client checks it (GnuTLS):
// its subject alternative names, or, when it has no DNS name and no IP
// address there, its common name. A certificate named by its CN alone
// was refused (Go's check has taken no CN since Go 1.15) where
// qemu-img connects. A name that does not match is refused in QEMU's
// words ("Certificate does not match the hostname H"). Not compared: a tls-hostname with a trailing dot
// (qimg takes it, as Go's check of the SANs; GnuTLS does not), and
// ".example.com" (GnuTLS's wildcard matches an empty label; qimg's
// does not).
func TestNBDClient_TLSNamesLikeQemu(t *testing.T) {
	d := qemuDir(t)
	img := qemuImage(t, filepath.Join(d, "a.qcow2"), "qcow2", "4M", "write -P 7 1M 64k")
	p := testkit.WritePKI(t, filepath.Join(d, "pki"), false)
	type cert struct {
		cn  string
		dns []string
		ips []net.IP
	}
	for k, c := range []struct {
		cert  cert
		hosts []string
	}{
		{cert{"localhost", nil, nil}, []string{"localhost", "LocalHost", "other", "localhos", "127.0.0.1"}},
		{cert{"*.example.com", nil, nil}, []string{"a.example.com", "example.com", "a.b.example.com", "x.example.org"}},
		{cert{"127.0.0.1", nil, nil}, []string{"127.0.0.1", "localhost"}},
		{cert{"localhost", []string{"other"}, nil}, []string{"localhost", "other"}},
		{cert{"localhost", nil, []net.IP{net.IPv4(127, 0, 0, 1)}}, []string{"localhost", "127.0.0.1"}},
		{cert{"*.com", nil, nil}, []string{"example.com"}},
		{cert{"*.example", nil, nil}, []string{"a.example"}},
		{cert{"a*.example.com", nil, nil}, []string{"ab.example.com", "a.example.com", "b.example.com"}},
		{cert{"x", []string{"localhost", "*.example.com", "b*.example.org"}, nil}, []string{"localhost", "LOCALHOST", "a.example.com", "a.b.example.com", "bc.example.org", "x", "127.0.0.1"}},
		{cert{"x", []string{"127.0.0.1"}, nil}, []string{"127.0.0.1"}},
	} {
		dir := filepath.Join(d, "srv"+string(rune('a'+k)))
		certPEM, keyPEM, _ := p.CA.IssueServerNames(t, pkix.Name{CommonName: c.cert.cn}, c.cert.dns, c.cert.ips)
		testkit.WriteFiles(t, dir, map[string][]byte{"ca-cert.pem": p.CA.PEM, "server-cert.pem": certPEM, "server-key.pem": keyPEM})
		sock := qemuNbdServe(t, "-r", "-e", "8", "-f", "qcow2", "--object", "tls-creds-x509,id=tls0,dir="+dir+",endpoint=server", "--tls-creds", "tls0", img)
		for _, h := range c.hosts {
			args := []string{"info", "--object", "tls-creds-x509,id=tls0,dir=" + p.Server + ",endpoint=client", "--image-opts",
				"driver=nbd,server.type=unix,server.path=" + sock + ",tls-creds=tls0,tls-hostname=" + h}
			o, e, code := runQ(t, args...)
			qo, qe, qcode := testkit.Run(t, "qemu-img", args...)
			if e, qe = asQemu(e), oneLine(qe); qe == "\n" {
				qe = ""
			}
			if code != qcode || o != qo || e != qe {
				t.Errorf("certificate %+v, tls-hostname %s:\nqimg: exit %d\n%s%s\nqemu-img: exit %d\n%s%s", c.cert, h, code, o, e, qcode, qo, qe)
			}
		}
	}
}
