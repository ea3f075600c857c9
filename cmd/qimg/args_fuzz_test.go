package main

import (
	"strings"
	"testing"
)

// FuzzArgs: the argument parsers qimg runs before it touches a file
// (getopt with convert's and create's option strings, and the size,
// resize, pattern and repair arguments, bench's options) return a value or an error for
// any argument list, and never panic. The input is the arguments
// joined by NUL bytes.
func FuzzArgs(f *testing.F) {
	for _, s := range []string{
		"-O\x00qcow2\x00-S\x004k\x00a\x00b",
		"-f\x00qcow2\x00-o\x00cluster_size=64k,,x\x00--object\x00secret,id=s,data=x\x00a\x001G",
		"--\x00-x", "-", "--image-opts=", "-qpc", "-o", "--force-share=1",
		"-n\x00--target-image-opts\x00a\x00b\x00driver=qcow2,file.filename=c", "-cB\x00x\x00a\x00b",
		"+1G", "-512", "0x10", "leaks", "all", "1.5M", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		for _, spec := range []struct {
			shorts string
			longs  []string
		}{
			{"f:O:o:pt:T:S:qUWm:cnB:F:Cr:l:", []string{"force-share", "object:", "image-opts", "target-is-zero", "salvage",
				"bitmaps", "skip-broken-bitmaps", "target-image-opts"}},
			{"f:o:b:F:quU", []string{"object:"}},
		} {
			if o, err := getopt(args, spec.shorts, spec.longs...); err == nil && o == nil {
				t.Fatalf("getopt(%q): nil options without an error", args)
			}
			getoptOutput(args, spec.shorts, spec.longs...)
		}
		// bench's options: a configuration within qemu-img's ranges, or
		// an error.
		if o, err := getopt(args, "c:d:f:ni:o:qs:S:t:wU", "pattern:", "no-drain", "flush-interval:", "image-opts",
			"object:", "force-share"); err == nil {
			if c, err := benchConfig(o); err == nil && (c.Count < 0 || c.Depth < 1 || c.Size < 1 || c.Offset < 0 || c.Step < 0 || c.FlushInterval < 0) {
				t.Fatalf("benchConfig(%q) = %+v", args, c)
			}
		}
		for _, a := range args {
			if v, err := ioNum(a); err == nil && v < 0 {
				t.Fatalf("ioNum(%q) = %d", a, v)
			}
			if _, n, err := parseResizeSize(a); err == nil && n < 0 {
				t.Fatalf("parseResizeSize(%q) = %d", a, n)
			}
			parsePattern(a)
			parseRepair(a)
		}
	})
}
