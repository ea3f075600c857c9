package main

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// FuzzGnutlsDN: any DER a client certificate's subject may hold gives a
// name or an error, never a panic; a subject of printable strings that
// crypto/x509 can write reads back with one RDN per attribute.
func FuzzGnutlsDN(f *testing.F) {
	for _, n := range []pkix.Name{
		{CommonName: "client"},
		{Country: []string{"GB"}, Organization: []string{"a,b"}, CommonName: " #x "},
		{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 4}, Value: "Smith"}}},
	} {
		b, err := asn1.Marshal(n.ToRDNSequence())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x03, 0x31, 0x01, 0x30})
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := gnutlsDN(raw)
		if err != nil {
			if s != "" {
				t.Fatalf("gnutlsDN: %q with error %v", s, err)
			}
			return
		}
		var seq pkix.RDNSequence
		if rest, err := asn1.Unmarshal(raw, &seq); err == nil && len(rest) == 0 && len(seq) > 0 && len(seq[0]) > 0 && s == "" {
			t.Fatalf("gnutlsDN(%x): empty name for %d RDNs", raw, len(seq))
		}
	})
}
