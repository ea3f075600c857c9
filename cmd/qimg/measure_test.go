package main

import (
	"fmt"
	"github.com/qring/qring/internal/testkit"
	"testing"
)

// TestMeasureQcow2Table checks the pure computation against numbers
// qemu-img 7.2 printed for "measure --size SIZE -O qcow2 -o
// cluster_size=CS,refcount_bits=RB" (-1: qemu-img refused the size).
func TestMeasureQcow2Table(t *testing.T) {
	cases := []struct {
		size, cs int64
		rb       int
		req, all int64
	}{
		{0, 512, 1, 1536, 1536},
		{0, 512, 16, 1536, 1536},
		{0, 512, 64, 1536, 1536},
		{1, 512, 1, 2560, 3072},
		{1, 512, 16, 2560, 3072},
		{1, 512, 64, 2560, 3072},
		{65536, 512, 1, 3072, 68608},
		{65536, 512, 16, 3072, 68608},
		{65536, 512, 64, 4096, 69632},
		{1000000, 512, 1, 17920, 1018368},
		{1000000, 512, 16, 21504, 1021952},
		{1000000, 512, 64, 33792, 1034240},
		{1073741824, 512, 1, 17311232, 1091053056},
		{1073741824, 512, 16, 21385216, 1095127040},
		{1073741824, 512, 64, 34629120, 1108370944},
		{10995116277760, 512, 1, -1, -1},
		{10995116277760, 512, 16, -1, -1},
		{10995116277760, 512, 64, -1, -1},
		{0, 4096, 1, 12288, 12288},
		{0, 4096, 16, 12288, 12288},
		{0, 4096, 64, 12288, 12288},
		{1, 4096, 1, 20480, 24576},
		{1, 4096, 16, 20480, 24576},
		{1, 4096, 64, 20480, 24576},
		{65536, 4096, 1, 20480, 86016},
		{65536, 4096, 16, 20480, 86016},
		{65536, 4096, 64, 20480, 86016},
		{1000000, 4096, 1, 20480, 1024000},
		{1000000, 4096, 16, 20480, 1024000},
		{1000000, 4096, 64, 20480, 1024000},
		{1073741824, 4096, 1, 2146304, 1075888128},
		{1073741824, 4096, 16, 2637824, 1076379648},
		{1073741824, 4096, 64, 4222976, 1077964800},
		{10995116277760, 4096, 1, -1, -1},
		{10995116277760, 4096, 16, -1, -1},
		{10995116277760, 4096, 64, -1, -1},
		{0, 65536, 1, 196608, 196608},
		{0, 65536, 16, 196608, 196608},
		{0, 65536, 64, 196608, 196608},
		{1, 65536, 1, 327680, 393216},
		{1, 65536, 16, 327680, 393216},
		{1, 65536, 64, 327680, 393216},
		{65536, 65536, 1, 327680, 393216},
		{65536, 65536, 16, 327680, 393216},
		{65536, 65536, 64, 327680, 393216},
		{1000000, 65536, 1, 327680, 1376256},
		{1000000, 65536, 16, 327680, 1376256},
		{1000000, 65536, 64, 327680, 1376256},
		{1073741824, 65536, 1, 393216, 1074135040},
		{1073741824, 65536, 16, 393216, 1074135040},
		{1073741824, 65536, 64, 524288, 1074266112},
		{10995116277760, 65536, 1, 1363542016, 10996479819776},
		{10995116277760, 65536, 16, 1678114816, 10996794392576},
		{10995116277760, 65536, 64, 2685206528, 10997801484288},
		{0, 2097152, 1, 6291456, 6291456},
		{0, 2097152, 16, 6291456, 6291456},
		{0, 2097152, 64, 6291456, 6291456},
		{1, 2097152, 1, 10485760, 12582912},
		{1, 2097152, 16, 10485760, 12582912},
		{1, 2097152, 64, 10485760, 12582912},
		{65536, 2097152, 1, 10485760, 12582912},
		{65536, 2097152, 16, 10485760, 12582912},
		{65536, 2097152, 64, 10485760, 12582912},
		{1000000, 2097152, 1, 10485760, 12582912},
		{1000000, 2097152, 16, 10485760, 12582912},
		{1000000, 2097152, 64, 10485760, 12582912},
		{1073741824, 2097152, 1, 10485760, 1084227584},
		{1073741824, 2097152, 16, 10485760, 1084227584},
		{1073741824, 2097152, 64, 10485760, 1084227584},
		{10995116277760, 2097152, 1, 50331648, 10995166609408},
		{10995116277760, 2097152, 16, 60817408, 10995177095168},
		{10995116277760, 2097152, 64, 92274688, 10995208552448},
	}
	for _, c := range cases {
		tg, err := parseMeasureTarget("qcow2", []string{fmt.Sprintf("cluster_size=%d,refcount_bits=%d", c.cs, c.rb)})
		if err != nil {
			t.Fatal(err)
		}
		m, err := measureQcow2(tg, c.size, -1, false)
		if c.req < 0 {
			if err == nil {
				t.Errorf("%+v: no error, qemu-img refuses", c)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		if m.Required != uint64(c.req) || m.FullyAllocated != uint64(c.all) {
			t.Errorf("%+v: got required %d, fully allocated %d", c, m.Required, m.FullyAllocated)
		}
	}
}

// TestMeasureMatchesQemu compares whole outputs with qemu-img measure on
// images qemu-img and qemu-io wrote.
func TestMeasureMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	imgs := qemuImages(t, workDir(t))
	var cases [][]string
	for _, name := range []string{"empty", "data", "zero", "top", "comp", "v2", "lazy", "raw"} {
		for _, o := range [][]string{{"-O", "qcow2"}, {"-O", "raw"}, {"-O", "qcow2", "--output=json"},
			{"-O", "qcow2", "-o", "cluster_size=4k,compat=0.10"}, {"-O", "qcow2", "-o", "backing_file=x"},
			{"-O", "qcow2", "-o", "preallocation=full,cluster_size=2M"},
			{"-O", "qcow2", "-o", "extended_l2=on"}, {"-O", "qcow2", "-o", "extended_l2=on,cluster_size=128k,preallocation=full"}} {
			cases = append(cases, append([]string{imgs[name]}, o...))
		}
	}
	for _, s := range []string{"0", "1", "1G", "100T", "12345678"} {
		cases = append(cases, []string{"--size", s, "-O", "qcow2"}, []string{"--size", s},
			[]string{"--size", s, "-O", "qcow2", "-o", "cluster_size=512,refcount_bits=64", "--output=json"},
			[]string{"--size", s, "-O", "qcow2", "-o", "extended_l2=on"})
	}
	cases = append(cases, []string{"--size", "1G", imgs["data"], "-O", "qcow2"}, []string{"-O", "qcow2"},
		[]string{"--size", "1G", "-O", "qcow2", "-o", "cluster_size=3k"},
		[]string{"--size", "1G", "-O", "qcow2", "-o", "cluster_size=8k,extended_l2=on"}, // refused (measured)
		[]string{imgs["data"], "-O", "qcow2", "-o", "cluster_size=4k,extended_l2=on"})
	for _, c := range cases {
		ours, _, code := runQ(t, append([]string{"measure"}, c...)...)
		theirs, _, qcode := testkit.Run(t, "qemu-img", append([]string{"measure"}, c...)...)
		if ours != theirs || code != qcode {
			t.Errorf("measure %q: exit %d, qemu-img %d\nours:\n%s\nqemu-img:\n%s", c, code, qcode, ours, theirs)
		}
	}
}
