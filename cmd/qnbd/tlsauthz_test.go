package main

import (
	"crypto/x509/pkix"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestTLSAuthz_LikeQemuNbd: --tls-authz with an authz-simple object
// lets in only the client certificate whose distinguished name is the
// identity, in the form QEMU compares (the certificate's attribute
// order, GnuTLS's): the same clients are served and refused by qnbd as
// by qemu-nbd, for the right name, the same name in RFC 4514's reversed
// order, and another certificate of the same CA.
func TestTLSAuthz_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	ca := newTestCA(t, "authz CA")
	scert, skey, _ := ca.Issue(t, "localhost", true)
	subj := pkix.Name{CommonName: "laptop.example.com", Organization: []string{"Example Org"}, OrganizationalUnit: []string{"Eng"},
		Locality: []string{"London"}, Province: []string{"London"}, Country: []string{"GB"}}
	ccert, ckey, _ := ca.IssueSubject(t, subj, false)
	ocert, okey, _ := ca.Issue(t, "other.example.com", false)
	server, client, other := filepath.Join(dir, "server"), filepath.Join(dir, "client"), filepath.Join(dir, "other")
	writeFiles(t, server, map[string][]byte{"ca-cert.pem": ca.PEM, "server-cert.pem": scert, "server-key.pem": skey})
	writeFiles(t, client, map[string][]byte{"ca-cert.pem": ca.PEM, "client-cert.pem": ccert, "client-key.pem": ckey})
	writeFiles(t, other, map[string][]byte{"ca-cert.pem": ca.PEM, "client-cert.pem": ocert, "client-key.pem": okey})
	img := filepath.Join(dir, "a.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	sock := filepath.Join(dir, "s.sock")
	uri := "nbds+unix:///?socket=" + sock
	comma := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	// Who gets in: the size nbdinfo reads, or its failure.
	probe := func() []string {
		var got []string
		for _, c := range []string{client, other} {
			o, _, code := testkit.Run(t, "nbdinfo", "--size", uri+"&tls-certificates="+c)
			got = append(got, fmt.Sprintf("%d:%s", code, strings.TrimSpace(o)))
		}
		return got
	}
	for _, identity := range []string{
		"C=GB,ST=London,L=London,O=Example Org,OU=Eng,CN=laptop.example.com",
		"CN=laptop.example.com,OU=Eng,O=Example Org,L=London,ST=London,C=GB",
	} {
		args := []string{"--object", "tls-creds-x509,id=tls0,dir=" + server + ",endpoint=server",
			"--object", "authz-simple,id=auth0,identity=" + comma(identity),
			"--tls-creds=tls0", "--tls-authz=auth0", "-f", "qcow2", img}
		stop := serveQemuNbd(t, sock, args...)
		want := probe()
		stop()
		s := start(t, uri, sock, append([]string{"-t", "-k", sock}, args...)...)
		got := probe()
		s.stop()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("identity %q: qnbd %v, qemu-nbd %v", identity, got, want)
		}
	}
	// Configuration refusals.
	_, e, code := testkit.Run(t, filepath.Join(bin, "qnbd"), "-k", sock, "--tls-authz=auth0", "-f", "qcow2", img)
	_, qe, qcode := testkit.Run(t, "qemu-nbd", "-k", sock, "--tls-authz=auth0", "-f", "qcow2", img)
	if code != qcode || strings.TrimPrefix(e, "qnbd: ") != strings.TrimPrefix(qe, "qemu-nbd: ") {
		t.Errorf("--tls-authz without --tls-creds: qnbd exit %d %q, qemu-nbd exit %d %q", code, e, qcode, qe)
	}
	for _, bad := range [][]string{
		{"--object", "tls-creds-x509,id=tls0,dir=" + server + ",endpoint=server", "--tls-creds=tls0", "--tls-authz=nosuch"},
		{"--object", "tls-creds-x509,id=tls0,dir=" + server + ",endpoint=server,verify-peer=off",
			"--object", "authz-simple,id=auth0,identity=CN=x", "--tls-creds=tls0", "--tls-authz=auth0"},
		{"--object", "authz-list,id=a1", "--tls-creds=" + server, "--tls-authz=a1"},
	} {
		if _, e, code := testkit.Run(t, filepath.Join(bin, "qnbd"), append(append([]string{"-k", sock}, bad...), "-f", "qcow2", img)...); code == 0 {
			t.Errorf("%q: qnbd started", bad)
		} else if !strings.Contains(e, "authz") {
			t.Errorf("%q: %s", bad, e)
		}
	}
}

// gnutlsDN formats names as GnuTLS does: the certificate's order, RFC
// 4514 escapes, multi-valued RDNs joined by '+'.
func TestGnutlsDN(t *testing.T) {
	ca := newTestCA(t, "dn CA")
	for _, tc := range []struct {
		subj pkix.Name
		want string
	}{
		{pkix.Name{CommonName: "host"}, "CN=host"},
		{pkix.Name{CommonName: "a,b+c", Organization: []string{" lead"}, Country: []string{"GB"}}, `C=GB,O=\ lead,CN=a\,b\+c`},
		{pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{2, 5, 4, 3}, Value: "x"}, {Type: []int{1, 2, 840, 113549, 1, 9, 1}, Value: "me@example.com"}}},
			// Go writes the address as a UTF8String, GnuTLS decodes EMAIL
			// from an IA5String only: qemu-nbd 7.2 printed this.
			"CN=x,EMAIL=#0c0e6d65406578616d706c652e636f6d"},
	} {
		_, _, c := ca.IssueSubject(t, tc.subj, false)
		got, err := gnutlsDN(c.RawSubject)
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.subj, got, err, tc.want)
		}
	}
}
