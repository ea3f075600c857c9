package main

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/qring/qring/qcow2"
)

// Fuzz targets of qimg's value parsers (dd's operands, resize's size,
// -r's rate, amend's -o options, measure's target format and -o
// options): for any input they return a valid value or an error, and
// never panic; where the value can be written back as an argument, it
// parses again to the same value. Lists of arguments are joined by NUL
// bytes.

// escapeOpt writes v as an option value, ",," for each comma.
func escapeOpt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

func FuzzParseDD(f *testing.F) {
	for _, s := range []string{
		"if=a\x00of=b", "if=a\x00of=b\x00bs=4k\x00count=3\x00skip=1", "bs=0\x00if=a\x00of=b",
		"bs=2G\x00if=a\x00of=b", "bs=2147483647\x00if=a\x00of=b", "count=-1\x00if=a\x00of=b",
		"if=a=b\x00of=", "if=\x00of=b", "x", "=", "skip=1.5k\x00if=a\x00of=b", "count=0x10\x00if=a\x00of=b",
		"count=8E\x00if=a\x00of=b", "conv=notrunc\x00if=a\x00of=b", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ops := strings.Split(s, "\x00")
		a, err := parseDD(ops)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("parseDD(%q): empty error", ops)
			}
			return
		}
		if a.in == "" || a.out == "" || a.bs < 1 || a.bs > 1<<31-1 || a.count < 0 || a.skip < 0 ||
			(!a.hasCount && a.count != 0) || (!a.hasSkip && a.skip != 0) {
			t.Fatalf("parseDD(%q) = %+v", ops, a)
		}
		// Written back as operands, it parses to the same arguments.
		back := []string{"if=" + a.in, "of=" + a.out, "bs=" + strconv.FormatInt(a.bs, 10)}
		if a.hasCount {
			back = append(back, "count="+strconv.FormatInt(a.count, 10))
		}
		if a.hasSkip {
			back = append(back, "skip="+strconv.FormatInt(a.skip, 10))
		}
		if b, err := parseDD(back); err != nil || b != a {
			t.Fatalf("parseDD(%q) = %+v; parseDD(%q) = %+v, %v", ops, a, back, b, err)
		}
	})
}

func FuzzParseResizeSize(f *testing.F) {
	for _, s := range []string{"1G", "+1G", "-512", "+", "-", "--1", "+-1", "-+1", "0x10M", "1.5T", " 1", "+ 1",
		"4611686018427387904", "4611686018427387905", "9223372036854775807", "9223372036854775808", "+8E", "16E",
		"18446744073709551615", "18446744073709551616", "-0", "1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sign, n, err := parseResizeSize(s)
		if err != nil {
			if sign != 0 || n != 0 || err.Error() == "" {
				t.Fatalf("parseResizeSize(%q) = %q, %d with error %v", s, sign, n, err)
			}
			return
		}
		if (sign != 0 && sign != '+' && sign != '-') || n < 0 {
			t.Fatalf("parseResizeSize(%q) = %q, %d", s, sign, n)
		}
		back := strconv.FormatInt(n, 10)
		if sign != 0 {
			back = string(sign) + back
		}
		if sign2, n2, err := parseResizeSize(back); err != nil || sign2 != sign || n2 != n {
			t.Fatalf("parseResizeSize(%q) = %q, %d; parseResizeSize(%q) = %q, %d, %v", s, sign, n, back, sign2, n2, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"0", "1", "64k", "1.5M", "0x100", "-1", "1e3", " 2G", "8E", "4611686018427387905", "k", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// qemu-img's cvtnum: any size qemu_strtosz reads, to INT64_MAX.
		n, err := parseRate(s)
		size, serr := qcow2.ParseSizeFull(s)
		if (err == nil) != (serr == nil && size <= math.MaxInt64) || (err == nil && uint64(n) != size) {
			t.Fatalf("parseRate(%q) = %d, %v; ParseSizeFull: %d, %v", s, n, err, size, serr)
		}
		if err != nil {
			if n != 0 || err.Error() == "" {
				t.Fatalf("parseRate(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("parseRate(%q) = %d", s, n)
		}
		if n2, err := parseRate(strconv.FormatInt(n, 10)); err != nil || n2 != n {
			t.Fatalf("parseRate(%q) = %d; parseRate(%d) = %d, %v", s, n, n, n2, err)
		}
	})
}

func FuzzParseAmendOptions(f *testing.F) {
	for _, s := range []string{
		"compat=0.10", "compat=v3,lazy_refcounts=on", "refcount_bits=1\x00refcount_bits=64", "refcount_bits=0x20",
		"refcount_bits=3", "refcount_bits=128", "refcount_bits=010", "size=1G,size=0", "size=-1",
		"backing_file=a,,b,backing_fmt=qcow2", "data_file=d,data_file_raw=off", "data_file_raw=yes",
		"lazy_refcounts", "lazy_refcounts=maybe", "encrypt.keyslot=0", "cluster_size=64k", "help", "=x", ",,,", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		opts := strings.Split(s, "\x00")
		var r amendRequest
		if err := parseAmendOptions(&r, opts); err != nil {
			if err.Error() == "" {
				t.Fatalf("parseAmendOptions(%q): empty error", opts)
			}
			return
		}
		if (r.version != nil && *r.version != 2 && *r.version != 3) ||
			(r.refbits != nil && (*r.refbits == 0 || *r.refbits > 64 || *r.refbits&(*r.refbits-1) != 0)) {
			t.Fatalf("parseAmendOptions(%q) = %+v", opts, r)
		}
		// Written back as one -o list, it parses to the same request.
		var back []string
		onOff := func(b bool) string {
			if b {
				return "on"
			}
			return "off"
		}
		if r.version != nil {
			back = append(back, map[uint32]string{2: "compat=0.10", 3: "compat=1.1"}[*r.version])
		}
		if r.lazy != nil {
			back = append(back, "lazy_refcounts="+onOff(*r.lazy))
		}
		if r.size != 0 {
			// Any int64: sizes from 2^63 to 2^64-1 are read as QEMU's
			// int64 reads them, negative (amend refuses them later).
			back = append(back, "size="+strconv.FormatUint(uint64(r.size), 10))
		}
		if r.refbits != nil {
			back = append(back, "refcount_bits="+strconv.FormatUint(uint64(*r.refbits), 10))
		}
		for _, p := range []struct {
			k string
			v *string
		}{{"backing_file", r.backingFile}, {"backing_fmt", r.backingFmt}, {"data_file", r.dataFile}} {
			if p.v != nil {
				back = append(back, p.k+"="+escapeOpt(*p.v))
			}
		}
		if r.dataFileRaw != nil {
			back = append(back, "data_file_raw="+onOff(*r.dataFileRaw))
		}
		for _, p := range r.crypt { // in order: amendEncryption reads them so
			back = append(back, "encrypt."+p[0]+"="+escapeOpt(p[1]))
		}
		var r2 amendRequest
		if err := parseAmendOptions(&r2, []string{strings.Join(back, ",")}); err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("parseAmendOptions(%q) = %+v; written back as %q: %+v, %v", opts, r, strings.Join(back, ","), r2, err)
		}
	})
}

func FuzzParseMeasureTarget(f *testing.F) {
	for _, s := range []string{
		"qcow2", "raw", "vpc", "vmdk", "qed", "",
		"qcow2\x00cluster_size=512,refcount_bits=1", "qcow2\x00cluster_size=0", "qcow2\x00cluster_size=2M,extended_l2=on",
		"qcow2\x00cluster_size=4k,extended_l2=on", "qcow2\x00compat=0.10,refcount_bits=64", "qcow2\x00compat=v3",
		"qcow2\x00preallocation=full\x00backing_file=b", "qcow2\x00encrypt.format=luks,encrypt.key-secret=s,encrypt.cipher-alg=aes-128",
		"qcow2\x00encrypt.format=luks", "qcow2\x00refcount_bits=0x8", "qcow2\x00compression_type=lz4", "qcow2\x00cluster_size=3000",
		"raw\x00preallocation=bogus", "raw\x00cluster_size=64k", "raw\x00size=1G", "qcow2\x00size=x", "qcow2\x00,,=", "qcow2\x00=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		format, rest, _ := strings.Cut(s, "\x00")
		var opts []string
		if rest != "" {
			opts = strings.Split(rest, "\x00")
		}
		m, err := parseMeasureTarget(format, opts)
		if err != nil {
			if m != nil || err.Error() == "" {
				t.Fatalf("parseMeasureTarget(%q, %q) = %+v with error %v", format, opts, m, err)
			}
			return
		}
		if m == nil || (m.format != "raw" && m.format != "qcow2") ||
			m.clusterSize < 512 || m.clusterSize > 2<<20 || m.clusterSize&(m.clusterSize-1) != 0 ||
			m.refcountOrder > 6 || (!m.v3 && m.refcountOrder != 4) ||
			(m.l2eSize != 8 && m.l2eSize != 16) || (m.l2eSize == 16 && m.clusterSize < 16384) ||
			m.cryptBytes < 0 || m.cryptBytes > 4096+8*(64*4000+4095) {
			t.Fatalf("parseMeasureTarget(%q, %q) = %+v", format, opts, m)
		}
		// The same options give the same target.
		if m2, err := parseMeasureTarget(format, opts); err != nil || *m2 != *m {
			t.Fatalf("parseMeasureTarget(%q, %q) not deterministic: %+v, %+v, %v", format, opts, m, m2, err)
		}
	})
}
