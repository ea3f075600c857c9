package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestJSONName_FormatWinsLikeQemu: the format given outside a json:
// name (-f, convert's -O, a qcow2 header's backing format) is the root's
// driver over the one the name states, as QEMU gives the options outside
// the name priority. The name's driver won here: qimg io -f qcow2 over
// json:{"driver":"raw",...x.qcow2} wrote raw bytes over the qcow2 header,
// convert -n -O qcow2 too, and a backing file named json:{"driver":"raw"}
// under a header saying qcow2 was read raw (and commit wrote the top's
// clusters raw into a qcow2 base). --image-opts with -f is refused, as
// qemu-img and qemu-io refuse it.
func TestJSONName_FormatWinsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	jraw := `json:{"driver":"raw","file":{"driver":"file","filename":"{d}/x.qcow2"}}`
	jq := `json:{"driver":"qcow2","file":{"driver":"file","filename":"{d}/x.qcow2"}}`
	mkx := func(d string) {
		x := filepath.Join(d, "x.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", x, "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 1M", x)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, "src.qcow2"), "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 5 1M 1M", filepath.Join(d, "src.qcow2"))
	}
	mkchain := func(d string) {
		b, top := filepath.Join(d, "b.qcow2"), filepath.Join(d, "t.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 1 3M 64k", b)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
			`json:{"driver":"raw","file":{"driver":"file","filename":"`+b+`"}}`, top, "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 9 0 64k", top)
	}
	for i, c := range []struct {
		tool, cmd string
		args      []string
		setup     func(d string)
		files     []string
	}{
		{"qemu-io", "io", []string{"-f", "qcow2", "-c", "write -P 1 0 64k", jraw}, mkx, []string{"x.qcow2"}},
		{"qemu-io", "io", []string{"-f", "qcow2", "-c", "read -P 7 0 1M", jraw}, mkx, nil},
		{"qemu-io", "io", []string{"-f", "qcow2", "--image-opts", "-c", "read 0 1", "driver=raw,file.filename={d}/x.qcow2"}, mkx, nil},
		{"qemu-img", "info", []string{"-f", "raw", jq}, mkx, nil},
		{"qemu-img", "info", []string{"-f", "qcow2", "--image-opts", "driver=raw,file.filename={d}/x.qcow2"}, mkx, nil},
		{"qemu-img", "check", []string{"-f", "qcow2", "--image-opts", "driver=qcow2,file.filename={d}/x.qcow2"}, mkx, nil},
		{"qemu-img", "convert", []string{"-n", "-f", "qcow2", "{d}/src.qcow2", "-O", "qcow2", jraw}, mkx, []string{"x.qcow2"}},
		{"qemu-img", "resize", []string{"-f", "qcow2", jraw, "+1M"}, mkx, []string{"x.qcow2"}},
		{"qemu-img", "bench", []string{"-w", "-c", "16", "-f", "qcow2", jraw}, mkx, []string{"x.qcow2"}},
		{"qemu-img", "info", []string{"-f", "qcow2", `json:{"driver":"raw","offset":4096,"file":{"driver":"file","filename":"{d}/x.qcow2"}}`}, mkx, nil},
		{"qemu-img", "commit", []string{"{d}/t.qcow2"}, mkchain, []string{"b.qcow2", "t.qcow2"}},
		{"qemu-img", "compare", []string{"-f", "qcow2", "--image-opts", "driver=qcow2,file.filename={d}/x.qcow2", "{d}/x.qcow2"}, mkx, nil},
	} {
		q, o := runBoth(t, base, c.tool, c.cmd, c.args, c.setup)
		if !q.same(o) {
			t.Errorf("case %d %s %q:\nqimg %v\n%s %v", i, c.cmd, c.args, q, c.tool, o)
		}
		for _, f := range c.files {
			qf, of := filepath.Join(q.dir, f), filepath.Join(o.dir, f)
			if b, err := os.ReadFile(qf); err != nil || !bytes.HasPrefix(b, []byte("QFI\xfb")) {
				t.Errorf("case %d %s %q: %s is no longer a qcow2 image (%v)", i, c.cmd, c.args, f, err)
				continue
			}
			testkit.QemuCheck(t, qf)
			if out, errOut, code := testkit.Run(t, "qemu-img", "compare", qf, of); code != 0 {
				t.Errorf("case %d %s %q: %s: qemu-img compare: %s%s", i, c.cmd, c.args, f, out, errOut)
			}
		}
	}
	// convert -n without -O: -O's default (raw) is not the target's
	// driver (qemu-img writes raw bytes over the qcow2 image here; a
	// deliberate difference).
	cd := filepath.Join(base, "convert")
	testkit.MustRun(t, "mkdir", "-p", cd)
	mkx(cd)
	x := filepath.Join(cd, "x.qcow2")
	if _, errOut, code := runQ(t, "convert", "-n", filepath.Join(cd, "src.qcow2"), `json:{"driver":"qcow2","file":{"driver":"file","filename":"`+x+`"}}`); code != 0 {
		t.Errorf("convert -n into a json: qcow2 target without -O: %s", errOut)
	}
	testkit.QemuCheck(t, x)
	testkit.MustRun(t, "qemu-img", "compare", filepath.Join(cd, "src.qcow2"), x)
	// A guest read through the chain sees the base as qcow2.
	d := filepath.Join(base, "chain")
	testkit.MustRun(t, "mkdir", "-p", d)
	mkchain(d)
	if out, errOut, code := runQ(t, "io", "-c", "read -P 1 3M 64k", filepath.Join(d, "t.qcow2")); code != 0 || !bytes.Contains([]byte(out), []byte("read 65536/65536")) {
		t.Errorf("read through a json: backing file named raw under a qcow2 backing format: %s%s", out, errOut)
	}
}

// TestCommit_BackingNullLikeQemu: a top named with "backing": null has no
// backing file as QEMU opens it, and commit refuses as qemu-img does.
// qimg reopened the base its header names and committed into it: the
// base's data was overwritten, the top emptied.
func TestCommit_BackingNullLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	j := `json:{"driver":"qcow2","file":{"driver":"file","filename":"{d}/t.qcow2"},"backing":null}`
	for i, args := range [][]string{{j}, {"-b", "{d}/b.qcow2", j}, {"-d", j}} {
		q, o := runBoth(t, base, "qemu-img", "commit", args, func(d string) {
			b, top := filepath.Join(d, "b.qcow2"), filepath.Join(d, "t.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "4M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 4M", b)
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", top)
			testkit.MustRun(t, "qemu-io", "-c", "write -P 9 0 1M", top)
			testkit.MustRun(t, "cp", b, b+".orig")
			testkit.MustRun(t, "cp", top, top+".orig")
		})
		for _, f := range []string{"b.qcow2", "t.qcow2"} {
			p := filepath.Join(q.dir, f)
			a, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(p + ".orig"); err != nil || !bytes.Equal(a, b) {
				t.Errorf("case %d %q: qimg changed %s", i, args, f)
			}
		}
		if !q.same(o) {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v", i, args, q, o)
		}
	}
}

// snapDates masks a snapshot list's date and VM clock columns.
var snapDates = regexp.MustCompile(`[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}|[0-9]{4}:[0-9]{2}:[0-9]{2}\.[0-9]{3}`)

// TestSnapshot_ThroughRawNodeLikeQemu: snapshot operations on a raw node
// over a qcow2 image (a window of it too) act on that image, as QEMU's
// fall back through a driver without snapshots to its child. qimg's -l
// listed nothing with exit 0 (a script concluded there were none), -c
// and -a were refused, -d said "snapshot not found".
func TestSnapshot_ThroughRawNodeLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	s := []string{"--image-opts", "driver=raw,file.driver=qcow2,file.file.filename={d}/x.qcow2"}
	w := []string{"--image-opts", "driver=raw,offset=65536,file.driver=qcow2,file.file.filename={d}/x.qcow2"}
	for i, args := range [][]string{
		append([]string{"-l"}, s...), append([]string{"-l"}, w...), append([]string{"-c", "s1"}, s...),
		append([]string{"-a", "s0"}, s...), append([]string{"-d", "s0"}, w...), append([]string{"-d", "nope"}, s...),
	} {
		q, o := runBoth(t, base, "qemu-img", "snapshot", args, func(d string) {
			x := filepath.Join(d, "x.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", x, "4M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", x)
			testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s0", x)
			testkit.MustRun(t, "qemu-io", "-c", "write -P 2 0 64k", x)
		})
		q.out, o.out = snapDates.ReplaceAllString(q.out, "<t>"), snapDates.ReplaceAllString(o.out, "<t>")
		if !q.same(o) {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v", i, args, q, o)
		}
		qi, oi := filepath.Join(q.dir, "x.qcow2"), filepath.Join(o.dir, "x.qcow2")
		testkit.QemuCheck(t, qi)
		if out, errOut, code := testkit.Run(t, "qemu-img", "compare", qi, oi); code != 0 {
			t.Errorf("case %d %q: qemu-img compare: %s%s", i, args, out, errOut)
		}
		qsn, _, _ := testkit.Run(t, "qemu-img", "snapshot", "-l", qi)
		osn, _, _ := testkit.Run(t, "qemu-img", "snapshot", "-l", oi)
		if snapDates.ReplaceAllString(qsn, "") != snapDates.ReplaceAllString(osn, "") {
			t.Errorf("case %d %q: snapshots after qimg:\n%s\nafter qemu-img:\n%s", i, args, qsn, osn)
		}
	}
}
