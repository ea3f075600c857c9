package main

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf16"

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

// dnAttr is an attribute type GnuTLS names (lib/x509/common.c,
// _oid2str), and the string types it decodes its value from: a value of
// another type prints as an unknown attribute's does, as the dotted OID
// with the value's DER in hex ("2.5.4.99=#1303616263"; telephoneNumber
// as a UTF8String: "telephoneNumber=#0c03313233").
type dnAttr struct {
	name string
	tags []int // the ASN.1 universal tags decoded
}

var (
	dirString = []int{asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagT61String, tagUniversalString, asn1.TagBMPString}
	printable = []int{asn1.TagPrintableString}
	ia5       = []int{asn1.TagIA5String}
)

const tagUniversalString = 28

var dnNames = map[string]dnAttr{
	"2.5.4.6": {"C", printable}, "2.5.4.9": {"street", dirString}, "2.5.4.12": {"title", dirString},
	"2.5.4.10": {"O", dirString}, "2.5.4.11": {"OU", dirString}, "2.5.4.3": {"CN", dirString},
	"2.5.4.7": {"L", dirString}, "2.5.4.8": {"ST", dirString}, "2.5.4.13": {"description", dirString},
	"2.5.4.5": {"serialNumber", printable}, "2.5.4.20": {"telephoneNumber", printable},
	"2.5.4.4": {"surName", dirString}, "2.5.4.43": {"initials", dirString},
	"2.5.4.44": {"generationQualifier", dirString}, "2.5.4.42": {"givenName", dirString},
	"2.5.4.65": {"pseudonym", dirString}, "2.5.4.46": {"dnQualifier", printable},
	"2.5.4.17": {"postalCode", dirString}, "2.5.4.41": {"name", dirString},
	"2.5.4.15":                   {"businessCategory", dirString},
	"0.9.2342.19200300.100.1.25": {"DC", ia5}, "0.9.2342.19200300.100.1.1": {"UID", dirString},
	"1.3.6.1.4.1.311.60.2.1.1": {"jurisdictionOfIncorporationLocalityName", dirString},
	"1.3.6.1.4.1.311.60.2.1.2": {"jurisdictionOfIncorporationStateOrProvinceName", dirString},
	"1.3.6.1.4.1.311.60.2.1.3": {"jurisdictionOfIncorporationCountryName", printable},
	"1.2.840.113549.1.9.1":     {"EMAIL", ia5},
}

// rawATV is an attribute of a distinguished name with its value's DER
// kept (pkix.AttributeTypeAndValue decodes it, losing its type).
type rawATV struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

type rawRDNSET []rawATV // "SET" suffix: encoding/asn1 reads a SET OF

// dnValue decodes a string value of one of tags; ok false otherwise.
func dnValue(v asn1.RawValue, tags []int) (string, bool) {
	if v.Class != asn1.ClassUniversal || v.IsCompound || !slices.Contains(tags, v.Tag) {
		return "", false
	}
	switch v.Tag {
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
		}
		return string(utf16.Decode(u)), true
	case tagUniversalString:
		if len(v.Bytes)%4 != 0 {
			return "", false
		}
		var b strings.Builder
		for i := 0; i < len(v.Bytes); i += 4 {
			b.WriteRune(rune(uint32(v.Bytes[i])<<24 | uint32(v.Bytes[i+1])<<16 | uint32(v.Bytes[i+2])<<8 | uint32(v.Bytes[i+3])))
		}
		return b.String(), true
	}
	return string(v.Bytes), true
}

// gnutlsDN is the distinguished name raw (a certificate's RawSubject)
// as GnuTLS formats it for QEMU's authorization: the RDNs in their
// order, joined by ",", the attributes of a multi-valued RDN by "+",
// values escaped as GnuTLS does.
func gnutlsDN(raw []byte) (string, error) {
	var seq []rawRDNSET
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
			attr, known := dnNames[oid]
			s, isStr := dnValue(atv.Value, attr.tags)
			if !known {
				attr.name = oid
			}
			if !isStr {
				atvs = append(atvs, attr.name+"=#"+hex.EncodeToString(atv.Value.FullBytes))
				continue
			}
			atvs = append(atvs, attr.name+"="+escapeDN(s))
		}
		rdns = append(rdns, strings.Join(atvs, "+"))
	}
	return strings.Join(rdns, ","), nil
}

// escapeDN escapes an attribute value as GnuTLS does (RFC 4514's
// escapes but for '=', which GnuTLS leaves as it is): the special
// characters, a leading space or '#', a trailing space.
func escapeDN(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(",+\"\\<>;", r),
			i == 0 && (r == ' ' || r == '#'),
			i == len(s)-1 && r == ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
