package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestErrors_LikeQemu: the common mistakes get qemu-img's message and
// exit code: a missing file ("Could not open 'x': Could not open 'x': No
// such file or directory"; qimg said "could not open 'x': no such file
// or directory"), a file that is not what -f says ("Image is not in
// qcow2 format", "Unknown driver"), bad -o options and values and bad
// sizes (QEMU's option parser's words, after the file name), a shrink
// without --shrink, a snapshot without a name, convert -n into a missing
// file, an unknown option. The comparison leaves out the "qimg: CMD: " /
// "qemu-img: " prefixes, qimg's usage line and qemu-img's "Try
// 'qemu-img --help'" line, and reads a message of several lines as qimg
// prints it, joined with "; ".
func TestErrors_LikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	a := qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "4M", "write -P 1 0 64k")
	raw := qemuImage(t, filepath.Join(dir, "r.raw"), "raw", "1M")
	text := filepath.Join(dir, "text.txt")
	if err := os.WriteFile(text, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.qcow2")
	n := filepath.Join(dir, "n.qcow2")
	nraw := filepath.Join(dir, "n.raw")
	files := map[string]string{"A": a, "M": missing, "N": n, "NR": nraw, "R": raw, "T": text}
	for _, c := range []string{
		"info M", "check M", "map M", "compare A M", "commit M", "resize M 8M", "snapshot -l M",
		"measure -O qcow2 M", "convert -O qcow2 M N",
		"convert -n -O qcow2 A M",
		"rebase -b M -F qcow2 A",
		// A -F naming no format QEMU knows, once the image is open.
		"rebase -u -b R -F bogus A", "rebase -b R -F bogus A", "rebase -b R -F bogus M",
		"create -f qcow2 -b M -F qcow2 N",
		"info -f qcow2 R", "check -f qcow2 R", "map -f qcow2 T", "compare -f qcow2 T A", "info -f bogus A",
		"info", "check", "info -Z A", "info --zz A", "info -f", "check --output", "check -r A",
		"create -f qcow2 -o bogus=1 N 4M", "create -f qcow2 -o cluster_size=4X N 4M",
		"create -f qcow2 -o refcount_bits=abc N 4M", "create -f qcow2 -o size=4X N",
		"create -f qcow2 -o lazy_refcounts=maybe N 4M", "create -f qcow2 -o extended_l2=maybe N 4M",
		"create -f qcow2 -o compat=0.9 N 4M", "create -f qcow2 -o preallocation=bogus N 4M",
		"create -f qcow2 -o compression_type=lz4 N 4M",
		"create -f qcow2 -o cluster_size=3 N 4M", "create -f qcow2 -o refcount_bits=3 N 4M",
		"create -f qcow2 -o lazy_refcounts=on,compat=0.10 N 4M",
		// Their order: the enums' values, then version 2 with
		// extended L2, then the cluster size.
		"create -f qcow2 -o compat=0.10,extended_l2=on,cluster_size=3k N 4M",
		"create -f qcow2 -o compat=0.10,extended_l2=on,cluster_size=8k N 4M",
		"create -f qcow2 -o compat=0.10,lazy_refcounts=on,extended_l2=on N 4M",
		"create -f qcow2 -o compression_type=lz4,cluster_size=3k N 4M",
		"create -f qcow2 -o preallocation=bogus,cluster_size=3k N 4M",
		"create -f qcow2 -o compat=0.9,cluster_size=3k N 4M",
		"create -f qcow2 -o backing_fmt=foo N 4M", "create -f qcow2 -o backing_fmt=qed N 4M",
		"create -f qcow2 -o compat=foo,backing_fmt=foo N 4M", "create -f qcow2 -b A -F foo N 4M",
		"create -f raw -o cluster_size=64k NR 4M", "create -f raw -o preallocation=metadata NR 4M",
		"create -f raw -o preallocation=bogus NR 4M", "create -f raw -b A -F qcow2 NR 4M",
		"create -f qcow2 N 4X", "create -f qcow2 N 1.5.3M", "create -f qcow2 N", "create -f qcow2",
		"create -f qcow2 N 4M 5M", "create -f bogus N 4M",
		"resize A 2M", "resize A 4Q", "resize A -8M",
		"snapshot -c A", "snapshot -a nosuch A", "snapshot -d nosuch A",
		"convert -O bogus A N", "convert -O qcow2 -o bogus=1 A N", "convert -O qcow2 -o lazy_refcounts=maybe A N",
		"convert -f raw -O qcow2 T", "measure --size 4X -O qcow2",
		// The file driver's options (qimg refused them).
		"measure --size 1M -O qcow2 -o nocow=on", "measure --size 1M -O raw -o extent_size_hint=1M",
		"measure --size 1M -O qcow2 -o nocow=bogus", "measure --size 1M -O raw -o extent_size_hint=x",
		"measure -O qcow2 A R", "measure --size 1M -O qcow2 A R",
		"measure --object secret,id=s0,data=x --size 1G -O luks -o key-secret=s0,extent_size_hint=1M",
		"measure --object secret,id=s0,data=x --size 1G -O luks -o key-secret=s0,nocow=bad",
		"amend -o bogus=1 A", "amend -o cluster_size=4k A", "amend A",
	} {
		args := strings.Fields(c)
		for i, w := range args {
			if p, ok := files[w]; ok {
				args[i] = p
			}
		}
		os.Remove(n)
		os.Remove(nraw)
		_, e, code := runQ(t, args...)
		os.Remove(n)
		os.Remove(nraw)
		_, qe, qcode := testkit.Run(t, "qemu-img", args...)
		os.Remove(n)
		os.Remove(nraw)
		if ours, theirs := ourMessage(e), qemuMessage(qe); ours != theirs || code != qcode {
			t.Errorf("%s:\nqimg exit %d: %s\nqemu-img exit %d: %s", c, code, ours, qcode, theirs)
		}
	}
}

var ourPrefix = regexp.MustCompile(`^qimg: [a-z]+: `)

// ourMessage is qimg's stderr without its prefixes and usage lines, its
// lines joined with "; ".
func ourMessage(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		l = ourPrefix.ReplaceAllString(l, "")
		if i := strings.Index(l, " (usage: "); i >= 0 {
			l = l[:i]
		}
		out = append(out, l)
	}
	return strings.Join(out, "; ")
}

// qemuMessage is qemu-img's stderr without its prefixes and "Try" line,
// its lines joined with "; ".
func qemuMessage(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if l == "Try 'qemu-img --help' for more information" {
			continue
		}
		out = append(out, strings.TrimPrefix(l, "qemu-img: "))
	}
	return strings.Join(out, "; ")
}
