package main

import (
	"strings"
	"testing"
)

// FuzzParseTLSCreds: a --tls-creds value parses to a directory and a
// verify-peer setting, or to an error, and never panics; the result,
// written back (dir=DIR,verify-peer=on|off, and DIR bare when it cannot
// be taken for a property), parses to the same credentials.
func FuzzParseTLSCreds(f *testing.F) {
	for _, s := range []string{
		"/etc/pki/qemu", "dir=/etc/pki/qemu", "/tmp/x,verify-peer=off", "dir=a,,b,verify-peer=no",
		"verify-peer=on,dir=x", "verify-peer=maybe", "a=b", "dir=", "dir", "x,endpoint=server", ",,", ",", "",
		"a,dir=b,dir=c", "verify-peer=off", "x,verify-peer",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tc, err := parseTLSCreds(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("parseTLSCreds(%q): empty error", s)
			}
			return
		}
		if tc.dir == "" || tc.authz != nil {
			t.Fatalf("parseTLSCreds(%q) = %+v", s, tc)
		}
		vp := "off"
		if tc.verifyPeer {
			vp = "on"
		}
		dir := strings.ReplaceAll(tc.dir, ",", ",,")
		backs := []string{"dir=" + dir + ",verify-peer=" + vp}
		if k, _, ok := strings.Cut(tc.dir, "="); !ok || k != "dir" && k != "verify-peer" {
			backs = append(backs, dir+",verify-peer="+vp)
		}
		for _, back := range backs {
			if tc2, err := parseTLSCreds(back); err != nil || tc2.dir != tc.dir || tc2.verifyPeer != tc.verifyPeer || tc2.authz != nil {
				t.Fatalf("parseTLSCreds(%q) = %+v; written back as %q: %+v, %v", s, tc, back, tc2, err)
			}
		}
	})
}
