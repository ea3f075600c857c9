package main

import (
	"strings"
	"testing"
)

// FuzzParse: qbench's command line parses or is refused with an error
// for any argument list, and never panics. The input is the arguments
// joined by NUL bytes.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"-c\x001M\x00-d\x0064\x00-s\x004k\x00-S\x0064k\x00-t\x00none\x00-w\x00img",
		"-i\x00io_uring-nomerge\x00--prealloc-fill\x00zeroes\x00-o\x00prealloc-size=8M,l2-cache-size=1M\x00img",
		"--create\x004G\x00-o\x00cluster_size=64k",
		"-c", "-c\x00-1", "-o\x00=", "--", "-", "-f\x00raw\x00-o\x000x10",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := parse(strings.Split(s, "\x00")); err == nil && c == nil {
			t.Fatalf("parse(%q): nil without an error", s)
		}
	})
}
