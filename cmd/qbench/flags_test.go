package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/qring/qring/qcow2"
)

// TestParse_OptionListsIgnoreOrder: the create options -o takes, the help
// and the unknown-option message leave out "size" wherever qcow2 lists it,
// not by dropping the first name (reordered here: "size" last).
func TestParse_OptionListsIgnoreOrder(t *testing.T) {
	saved := qcow2.CreateOptionNames
	defer func() { qcow2.CreateOptionNames = saved }()
	reordered := without(saved, "size")
	qcow2.CreateOptionNames = append(reordered, "size")

	if got := createOptionNames(); !slices.Equal(got, reordered) {
		t.Errorf("create options %v, want %v", got, reordered)
	}
	want := "create options (with --create or the seed image): " + strings.Join(reordered, ", ") + "\n"
	if !strings.Contains(usage(), want) {
		t.Errorf("help lacks %q", want)
	}
	if _, err := parse(strings.Fields("-o size=1G")); err == nil || !strings.Contains(err.Error(), "unknown option") {
		t.Errorf("-o size=1G: error %v, want an unknown option", err)
	} else if !strings.HasSuffix(err.Error(), "create: "+strings.Join(reordered, ", ")+")") {
		t.Errorf("-o size=1G: %v", err)
	}
	cl, err := parse(strings.Fields("-o cluster_size=4k --create 1G x.img"))
	if err != nil || cl.cfg.Create.ClusterSize != 4096 {
		t.Errorf("-o cluster_size=4k: %v", err)
	}
}

// TestParseSize: one parser for counts, depths, offsets and sizes.
func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "4k": 4096, "1M": 1 << 20, "3": 3} {
		if n, err := parseSize("size", s); err != nil || n != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"-1", "4q", ""} {
		if _, err := parseSize("request size", s); err == nil || !strings.Contains(err.Error(), "invalid request size") {
			t.Errorf("parseSize(%q): error %v", s, err)
		}
	}
}

// TestParseCount: counts, depths and flush intervals as qemu-img bench
// reads them (base 0), sizes and offsets as qemu_strtosz (decimal).
func TestParseCount(t *testing.T) {
	for s, want := range map[string]int64{"010": 8, "0x10": 16, "64": 64, "1M": 1 << 20} {
		if n, err := parseCount("count", s); err != nil || n != want {
			t.Errorf("parseCount(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for s, want := range map[string]int64{"01000": 1000, "0x400": 1024, "4k": 4096} {
		if n, err := parseSize("offset", s); err != nil || n != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
}
