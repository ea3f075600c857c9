package main

import (
	"encoding/asn1"
	"testing"
)

// The names qemu-nbd 7.2 (GnuTLS 3.7) printed for the same subjects in
// "TLS x509 authz check for ... is denied", with certificates openssl
// req -subj made: the attribute names of GnuTLS's table (surName,
// givenName, jurisdictionOf...), the hex of the value's own DER when its
// type is not the one GnuTLS decodes (telephoneNumber as a UTF8String),
// and '=' in a value not escaped.
type dnATV struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// dnRDNSET: encoding/asn1 marshals a slice type whose name ends in
// "SET" as a SET (an RDN), not a SEQUENCE.
type dnRDNSET []dnATV

func TestGnutlsDN_LikeQemu(t *testing.T) {
	str := func(tag int, s string) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: []byte(s)}
	}
	atv := func(oid asn1.ObjectIdentifier, v asn1.RawValue) dnRDNSET {
		return dnRDNSET{{Type: oid, Value: v}}
	}
	p, u := asn1.TagPrintableString, asn1.TagUTF8String
	for _, tc := range []struct {
		rdns []dnRDNSET
		want string
	}{
		{[]dnRDNSET{
			atv(asn1.ObjectIdentifier{2, 5, 4, 4}, str(u, "Smith")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 42}, str(u, "John")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 17}, str(u, "12345")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 20}, str(u, "123")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 41}, str(u, "Nm")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 46}, str(p, "dq")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 3}, str(u, "a1")),
		}, "surName=Smith,givenName=John,postalCode=12345,telephoneNumber=#0c03313233,name=Nm,dnQualifier=dq,CN=a1"},
		{[]dnRDNSET{
			atv(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 60, 2, 1, 3}, str(p, "GB")),
			atv(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 60, 2, 1, 1}, str(u, "Y")),
			atv(asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, str(asn1.TagIA5String, "com")),
			atv(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, str(u, "me@example.com")),
			atv(asn1.ObjectIdentifier{1, 2, 3, 4}, str(u, "foo")),
		}, "jurisdictionOfIncorporationCountryName=GB,jurisdictionOfIncorporationLocalityName=Y,DC=com,EMAIL=#0c0e6d65406578616d706c652e636f6d,1.2.3.4=#0c03666f6f"},
		{[]dnRDNSET{
			atv(asn1.ObjectIdentifier{2, 5, 4, 10}, str(u, " lead")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 11}, str(u, "#hash")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 7}, str(u, "trail ")),
			atv(asn1.ObjectIdentifier{2, 5, 4, 3}, str(u, `a<b>c"d=e`)),
		}, `O=\ lead,OU=\#hash,L=trail\ ,CN=a\<b\>c\"d=e`},
	} {
		raw, err := asn1.Marshal(tc.rdns)
		if err != nil {
			t.Fatal(err)
		}
		got, err := gnutlsDN(raw)
		if err != nil || got != tc.want {
			t.Errorf("got %q, %v\nwant %q", got, err, tc.want)
		}
	}
}
