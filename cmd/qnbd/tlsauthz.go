package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/qring/qring/internal/optstr"
)

// --object authz-simple,id=ID,identity=NAME with --tls-authz=ID, as
// qemu-nbd: a client whose certificate passed the TLS credentials'
// checks is let in only if its distinguished name is NAME exactly, in
// the form QEMU compares (GnuTLS's gnutls_x509_crt_get_dn: the
// attributes in the certificate's order, "C=GB,ST=London,...,CN=host",
// not RFC 4514's reversal). A comma inside NAME is written ",," as in
// every QEMU option string. Other authorization objects (authz-list,
// authz-listfile, authz-pam) are refused.

// authzObject reads one --object value: ok false when it is no
// authorization object (left to the other readers).
func authzObject(s string) (id, identity string, ok bool, err error) {
	parts := optstr.Split(s)
	if len(parts) == 0 {
		return "", "", false, nil
	}
	typ := parts[0]
	if k, v, kv := strings.Cut(typ, "="); kv {
		if k != "qom-type" {
			return "", "", false, nil
		}
		typ = v
	}
	if !strings.HasPrefix(typ, "authz-") {
		return "", "", false, nil
	}
	if typ != "authz-simple" {
		return "", "", true, fmt.Errorf("--object %s: only authz-simple authorization is supported", typ)
	}
	hasIdentity := false
	for _, e := range parts[1:] {
		k, v, _ := strings.Cut(e, "=")
		switch k {
		case "id":
			id = v
		case "identity":
			identity, hasIdentity = v, true
		default:
			return "", "", true, fmt.Errorf("--object authz-simple: unsupported property %q (id, identity)", k)
		}
	}
	switch {
	case id == "":
		return "", "", true, errors.New("--object authz-simple: Parameter 'id' is missing")
	case !hasIdentity:
		return "", "", true, errors.New("Parameter 'identity' is missing")
	}
	return id, identity, true, nil
}

// authzCheck is the check --tls-authz adds after the credentials'
// (verifyClient): the leaf certificate's distinguished name must be
// identity.
func authzCheck(leaf *x509.Certificate, identity string) error {
	dn, err := gnutlsDN(leaf.RawSubject)
	if err != nil {
		return fmt.Errorf("TLS x509 authz check: %w", err)
	}
	if dn != identity {
		return fmt.Errorf("TLS x509 authz check for %s is denied", dn)
	}
	return nil
}

// dnNames are the attribute types GnuTLS names; others print as their
// dotted OID with the value's DER in hex ("2.5.4.99=#1303616263").
var dnNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "street",
	"2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title", "2.5.4.5": "serialNumber",
	"0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
	"1.2.840.113549.1.9.1": "EMAIL",
}

// gnutlsDN is the distinguished name raw (a certificate's RawSubject)
// as GnuTLS formats it for QEMU's authorization: the RDNs in their
// order, joined by ",", the attributes of a multi-valued RDN by "+",
// values escaped as RFC 4514 does.
func gnutlsDN(raw []byte) (string, error) {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &seq); err != nil {
		return "", err
	} else if len(rest) != 0 {
		return "", errors.New("trailing data after the subject")
	}
	var rdns []string
	for _, rdn := range seq {
		var atvs []string
		for _, atv := range rdn {
			oid := atv.Type.String()
			name, known := dnNames[oid]
			s, isStr := atv.Value.(string)
			if !known || !isStr {
				der, err := asn1.Marshal(atv.Value)
				if err != nil {
					return "", err
				}
				atvs = append(atvs, oid+"=#"+hex.EncodeToString(der))
				continue
			}
			atvs = append(atvs, name+"="+escapeDN(s))
		}
		rdns = append(rdns, strings.Join(atvs, "+"))
	}
	return strings.Join(rdns, ","), nil
}

// escapeDN escapes an attribute value as RFC 4514 (and GnuTLS) does:
// the special characters, a leading space or '#', a trailing space.
func escapeDN(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(",+\"\\<>;=", r),
			i == 0 && (r == ' ' || r == '#'),
			i == len(s)-1 && r == ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
