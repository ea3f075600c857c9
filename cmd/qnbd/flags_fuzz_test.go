package main

import (
	"strings"
	"testing"
)

// FuzzParseFlags: qnbd's command line parses or is refused with an
// error for any argument list, and never panics. The input is the
// arguments joined by NUL bytes.
func FuzzParseFlags(f *testing.F) {
	for _, s := range []string{
		"-r\x00-f\x00qcow2\x00img",
		"--port=10809\x00--bind\x000.0.0.0\x00-x\x00name\x00-t\x00img",
		"-k\x00/tmp/s\x00--discard=unmap\x00--detect-zeroes=on\x00img",
		"--tls-creds\x00dir=x,endpoint=server\x00img",
		"--object\x00secret,id=s,data=x\x00--image-opts\x00driver=qcow2,file=img",
		"--", "-", "--=", "-rfx", "--offset=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if fl, err := parseFlags(strings.Split(s, "\x00")); err == nil && fl == nil {
			t.Fatalf("parseFlags(%q): nil flags without an error", s)
		}
		for _, a := range strings.Split(s, "\x00") {
			parseTLSCreds(a)
		}
	})
}
