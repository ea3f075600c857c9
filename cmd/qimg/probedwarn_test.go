package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/testkit"
)

// blockNodeName is the node QEMU names in its bitmap refusal ("Can't
// store persistent bitmaps to #block123"): a number of its own, which
// qimg leaves out.
var blockNodeName = regexp.MustCompile(` to #block[0-9]+`)

// TestProbedRaw_WarningsLikeQemu: the commands that open the image named
// on the command line writable print QEMU's warning for a raw image whose
// format was probed (no -f, no driver=) at open time, before anything
// else they say, as qemu-img 7.2 does (snapshot -a twice: QEMU's
// fallback reopens the raw driver); read-only opens, a format given, and
// other formats print none.
func TestProbedRaw_WarningsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	setup := func(d string) {
		p := func(n string) string { return filepath.Join(d, n) }
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p("base.raw"), "1M")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("q.qcow2"), "1M")
		if err := os.WriteFile(p("empty.raw"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []struct {
		cmd   string
		args  []string
		warns int  // how many warnings qemu-img prints (checked too, so that both cannot drift together)
		qcow2 bool // q.qcow2 left as qemu-img leaves it (false: the command writes it, not bytewise alike)
	}{
		// resize
		{"resize", []string{"{d}/base.raw", "+1M"}, 1, true},
		{"resize", []string{"-q", "{d}/base.raw", "+1M"}, 1, true},
		{"resize", []string{"{d}/base.raw", "-512K"}, 1, true},
		{"resize", []string{"--shrink", "{d}/base.raw", "-512K"}, 1, true},
		{"resize", []string{"{d}/base.raw", "0"}, 1, true},
		{"resize", []string{"{d}/empty.raw", "1M"}, 1, true},
		{"resize", []string{"--image-opts", "file.filename={d}/base.raw", "+1M"}, 1, true},
		{"resize", []string{"-f", "raw", "{d}/base.raw", "+1M"}, 0, true},
		{"resize", []string{"--image-opts", "driver=raw,file.filename={d}/base.raw", "+1M"}, 0, true},
		{"resize", []string{"{d}/q.qcow2", "+1M"}, 0, false},
		// amend
		{"amend", []string{"-o", "compat=1.1", "{d}/base.raw"}, 1, true},
		{"amend", []string{"-o", "size=2M", "{d}/base.raw"}, 1, true},
		{"amend", []string{"-o", "help", "{d}/base.raw"}, 1, true},
		{"amend", []string{"--image-opts", "-o", "size=2M", "file.filename={d}/base.raw"}, 1, true},
		{"amend", []string{"-o", "size=2M", `json:{"file":{"driver":"file","filename":"{d}/base.raw"}}`}, 1, true},
		{"amend", []string{"-f", "raw", "-o", "compat=1.1", "{d}/base.raw"}, 0, true},
		{"amend", []string{"-f", "raw", "-o", "size=2M", "{d}/nope.raw"}, 0, true},
		{"amend", []string{"-o", "help", "{d}/q.qcow2"}, 0, true},
		// check
		{"check", []string{"-r", "all", "{d}/base.raw"}, 1, true},
		{"check", []string{"-r", "leaks", "--output=json", "{d}/base.raw"}, 1, true},
		{"check", []string{"--image-opts", "-r", "all", "file.filename={d}/base.raw"}, 1, true},
		{"check", []string{"{d}/base.raw"}, 0, true},
		{"check", []string{"-U", "{d}/base.raw"}, 0, true},
		{"check", []string{"-r", "all", "-f", "raw", "{d}/base.raw"}, 0, true},
		{"check", []string{"-r", "all", "{d}/q.qcow2"}, 0, true},
		// commit: the image itself, opened writable by qemu-img
		{"commit", []string{"{d}/base.raw"}, 1, true},
		{"commit", []string{"-d", "{d}/base.raw"}, 1, true},
		{"commit", []string{"-p", "{d}/base.raw"}, 1, true},
		{"commit", []string{"-b", "x", "{d}/base.raw"}, 1, true},
		{"commit", []string{"--image-opts", "file.filename={d}/base.raw"}, 1, true},
		{"commit", []string{"-f", "raw", "{d}/base.raw"}, 0, true},
		{"commit", []string{"{d}/q.qcow2"}, 0, true},
		// bitmap
		{"bitmap", []string{"--add", "{d}/base.raw", "b0"}, 1, true},
		{"bitmap", []string{"--remove", "{d}/base.raw", "b0"}, 1, true},
		{"bitmap", []string{"--clear", "--image-opts", "file.filename={d}/base.raw", "b0"}, 1, true},
		{"bitmap", []string{"--add", "-f", "raw", "{d}/base.raw", "b0"}, 0, true},
		{"bitmap", []string{"--enable", "-f", "raw", "{d}/base.raw", "b0"}, 0, true},
		// snapshot
		{"snapshot", []string{"-c", "s1", "{d}/base.raw"}, 1, true},
		{"snapshot", []string{"-d", "s1", "{d}/base.raw"}, 1, true},
		{"snapshot", []string{"-a", "s1", "{d}/base.raw"}, 2, true},
		{"snapshot", []string{"{d}/base.raw"}, 1, true},
		{"snapshot", []string{"--image-opts", "-c", "s1", "file.filename={d}/base.raw"}, 1, true},
		{"snapshot", []string{"-l", "{d}/base.raw"}, 0, true},
		{"snapshot", []string{"-U", "-l", "{d}/base.raw"}, 0, true},
		{"snapshot", []string{"-U", "-c", "s1", "{d}/base.raw"}, 0, true},
		{"snapshot", []string{"--image-opts", "-c", "s1", "driver=raw,file.filename={d}/base.raw"}, 0, true},
		// rebase, safe and unsafe
		{"rebase", []string{"-b", "q.qcow2", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"-u", "-b", "q.qcow2", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"-b", "q.qcow2", "-F", "qcow2", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"-u", "-b", "q.qcow2", "-F", "qcow2", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"-u", "-b", "", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"-b", "nope.qcow2", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"-b", "nope.qcow2", "-F", "qcow2", "{d}/base.raw"}, 1, true},
		{"rebase", []string{"--image-opts", "-u", "-b", "q.qcow2", "-F", "qcow2", "file.filename={d}/base.raw"}, 1, true},
		{"rebase", []string{"-f", "raw", "-u", "-b", "q.qcow2", "-F", "qcow2", "{d}/base.raw"}, 0, true},
		{"rebase", []string{"-f", "raw", "-b", "nope.qcow2", "{d}/base.raw"}, 0, true},
		// read-only commands
		{"info", []string{"{d}/base.raw"}, 0, true},
		{"map", []string{"{d}/base.raw"}, 0, true},
	} {
		q, o := runBoth(t, base, "qemu-img", c.cmd, c.args, setup)
		o.errOut = blockNodeName.ReplaceAllString(o.errOut, "")
		files := []string{"base.raw", "empty.raw"}
		if c.qcow2 {
			files = append(files, "q.qcow2")
		}
		same, err := sameFiles(q.dir, o.dir, files...)
		if err != nil {
			t.Fatal(err)
		}
		if !q.same(o) || !same {
			t.Errorf("case %d %s %q:\nqimg %v\nqemu-img %v\nfiles equal: %v", i, c.cmd, c.args, q, o, same)
		}
		warning := strings.SplitN(imgopen.ProbedWarning, "%s", 2)[0]
		if n := strings.Count(o.errOut, warning); n != c.warns {
			t.Errorf("case %d %s %q: qemu-img printed %d warnings, the case expects %d:\n%v", i, c.cmd, c.args, n, c.warns, o)
		}
		if c.warns > 0 && !strings.HasPrefix(q.errOut, warning) {
			t.Errorf("case %d %s %q: qimg's warning does not come first:\n%v", i, c.cmd, c.args, q)
		}
	}
}
