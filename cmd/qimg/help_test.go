package main

import (
	"github.com/qring/qring/internal/testkit"
	"strings"
	"testing"
)

// TestHelp_PerCommand: "qimg CMD --help", "qimg CMD -h" and "qimg help
// CMD" print that command's usage and exit 0; --version prints the
// version line.
func TestHelp_PerCommand(t *testing.T) {
	for name, c := range commands {
		want := "usage: qimg " + name + " " + c.usage + "\n"
		for _, args := range [][]string{{name, "--help"}, {name, "-h"}, {"help", name}, {name, "-f", "qcow2", "x", "--help"}} {
			out, e, code := runQ(t, args...)
			if code != 0 || !strings.HasPrefix(out, want) || e != "" {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want 0 and %q", args, code, out, e, want)
			}
		}
	}
	if _, _, code := runQ(t, "help", "nosuch"); code != 1 {
		t.Errorf("help nosuch: exit %d", code)
	}
	out, _, code := runQ(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "qimg version ") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

// TestCreate_OptionsHelp: -o help lists the create options of the format
// with their meaning, in qemu-img's layout, for create and convert; every
// option qemu-img lists that qimg lists too has qemu-img's first words.
func TestCreate_OptionsHelp(t *testing.T) {
	for _, args := range [][]string{
		{"create", "-o", "help"}, {"create", "-f", "qcow2", "-o", "cluster_size=4k,help"},
		{"convert", "-O", "qcow2", "-o", "help"}, {"create", "-f", "raw", "-o", "?"},
	} {
		out, e, code := runQ(t, args...)
		f := "qcow2"
		if strings.Contains(strings.Join(args, " "), "raw") {
			f = "raw"
		}
		if code != 0 || !strings.HasPrefix(out, "Supported "+f+" options:\n") || !strings.Contains(out, "  size=<size>            - Virtual disk size\n") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, e, out)
		}
	}
	// The file driver's options once a file name is given, as qemu-img.
	for _, f := range []string{"qcow2", "raw", "vmdk", "vpc"} {
		with, without := mustQ(t, "create", "-f", f, "-o", "help", "x"), mustQ(t, "create", "-f", f, "-o", "help")
		for _, name := range []string{"nocow", "extent_size_hint"} {
			if !strings.Contains(with, "  "+name+"=<") || strings.Contains(without, "  "+name+"=<") {
				t.Errorf("-f %s -o help: %s listed with a file name %v, without %v", f, name,
					strings.Contains(with, name), strings.Contains(without, name))
			}
		}
	}
	out := mustQ(t, "create", "-o", "help")
	for _, name := range []string{"cluster_size", "compat", "refcount_bits", "lazy_refcounts", "preallocation", "backing_file", "backing_fmt", "compression_type", "extended_l2", "encrypt.format", "encrypt.key-secret"} {
		if !strings.Contains(out, "  "+name+"=<") {
			t.Errorf("-o help does not list %s:\n%s", name, out)
		}
	}
}

// TestCreate_OptionsHelpLikeQemu: each line of qimg's -o help starts as
// qemu-img's line for the same option.
func TestCreate_OptionsHelpLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	q := testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", "help")
	for _, l := range strings.Split(strings.TrimSpace(mustQ(t, "create", "-o", "help")), "\n")[1:] {
		name, _, _ := strings.Cut(strings.TrimSpace(l), "=")
		i := strings.Index(q, "\n  "+name+"=")
		if i < 0 {
			t.Errorf("qemu-img does not list %s", name)
			continue
		}
		ql, _, _ := strings.Cut(q[i+1:], "\n")
		if !strings.HasPrefix(l, ql) && !strings.HasPrefix(l, strings.TrimSuffix(ql, ")")) {
			t.Errorf("-o help line\n%q\ndoes not start as qemu-img's\n%q", l, ql)
		}
	}
}

// TestHelp_DifferencesNoted: the commands the README lists as differing
// deliberately from qemu-img say so in their --help.
func TestHelp_DifferencesNoted(t *testing.T) {
	for name, want := range map[string]string{
		"create": "qemu-img's default is raw", "map": "QEMU 8.2's layout",
		"convert": "is refused", "compare": "NBD export's holes", "info": "--metrics",
		"io": "native", "bench": "native", "check": "past the\nend of the file",
		"snapshot": "no VM state", "resize": "--preallocation", "amend": "compat=0.10",
	} {
		if out := mustQ(t, name, "--help"); !strings.Contains(out, want) {
			t.Errorf("qimg %s --help does not say %q:\n%s", name, want, out)
		}
	}
}
