package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCreateRefusals_LikeQemu: create's refusals come at qemu-img's
// point and in its words: an enum option's unknown value after the
// "Formatting" line (which shows the value as given), a size past
// INT64_MAX as a range error, a size whose L1 table would be too large
// as the qcow2 driver's "too large for file format". Whether a file is
// left behind is qemu-img's too.
func TestCreateRefusals_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, args := range [][]string{
		{"-o", "compat=0.9", "1M"},
		{"-o", "preallocation=xyz", "1M"},
		{"-o", "compression_type=xyz", "1M"},
		{"-o", "encrypt.format=xyz", "1M"},
		{"-o", "compat=0.9,cluster_size=abc", "1M"},
		{"9E"},
		{"99999999999999999999"},
		{"4E"},
		{"1X"},
	} {
		createLikeQemu(t, d, args)
	}
}

// joinQemu is qemu-img's stderr with its lines joined as qimg joins a
// message's lines ("; ", without a repeated "qemu-img: ").
func joinQemu(s string) string {
	if s == "" {
		return s
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i := 1; i < len(lines); i++ {
		lines[i] = strings.TrimPrefix(lines[i], "qemu-img: ")
	}
	return strings.Join(lines, "; ") + "\n"
}

// createLikeQemu runs create -f qcow2 with args (options, the size last)
// on x.qcow2 in d through qimg and through qemu-img, and compares the
// exit codes, the output and whether a file is left.
func createLikeQemu(t *testing.T, d string, args []string) {
	t.Helper()
	img := filepath.Join(d, "x.qcow2")
	full := append(append([]string{"create", "-f", "qcow2"}, args[:len(args)-1]...), img, args[len(args)-1])
	o, e, code := runQ(t, full...)
	_, oerr := os.Stat(img)
	os.Remove(img)
	qo, qe, qcode := testkit.Run(t, "qemu-img", full...)
	_, qerr := os.Stat(img)
	os.Remove(img)
	if code != qcode || o != qo || asQemu(e) != joinQemu(qe) || (oerr == nil) != (qerr == nil) {
		t.Errorf("%q:\nqimg: exit %d, file %v\n%s%s\nqemu-img: exit %d, file %v\n%s%s", args, code, oerr == nil, o, e, qcode, qerr == nil, qo, qe)
	}
}
