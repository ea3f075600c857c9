package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestJSONBacking_NoDriverChain: a json: backing name without a driver
// takes the header's backing format (QEMU's bdrv_open_backing_file) in
// every command, not only when the chain opens under the image: info
// --backing-chain and commit open the name on its own, and said "image
// spec: no driver= key" where qemu-img works.
func TestJSONBacking_NoDriverChain(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	t.Chdir(d)
	const spec = `json:{"file":{"driver":"file","filename":"base.qcow2"}}`
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 0x5a 0 128k")
	args := []string{"info", "--backing-chain", "top.qcow2"}
	qemuOverlay(t, filepath.Join(d, "top.qcow2"), spec, "qcow2", "write -P 0x33 64k 64k")
	ours, oerr, code := runQ(t, args...)
	theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
	if ours != theirs || code != qcode {
		t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, ours, oerr, theirs, terr)
	}
	if _, e, code := runQ(t, "commit", "top.qcow2"); code != 0 {
		t.Errorf("commit into a json: backing without driver: exit %d: %s", code, strings.TrimSpace(e))
	}
	testkit.MustRun(t, "qemu-io", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0x33 64k 64k", "base.qcow2")
	testkit.QemuCheck(t, "base.qcow2")
}

// TestMeasure_LastValueWins: of a key given twice to measure -o, the last
// value counts, as qemu-img measure reads its options (create does so
// already): compat=foo,compat=1.1 and preallocation=foo,preallocation=off
// measure; compat=v3,compat=1.1 too.
func TestMeasure_LastValueWins(t *testing.T) {
	testkit.NeedQemu(t)
	for _, o := range []string{"compat=foo,compat=1.1", "compat=v3,compat=1.1", "preallocation=foo,preallocation=off",
		"compat=1.1,compat=foo", "preallocation=off,preallocation=foo"} {
		args := []string{"measure", "-O", "qcow2", "--size", "1G", "-o", o}
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		if ours != theirs || code != qcode || (code != 0 && ourMessage(oerr) != qemuMessage(terr)) {
			t.Errorf("measure -o %s: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", o, code, qcode, ours, oerr, theirs, terr)
		}
	}
}

// TestJSONBacking_MirrorRefused: a json: backing name with a mirror node
// (qemu-img knows no such driver) is refused by every command, writable
// ones too (commit opens the base for writing: the header's name chose
// the file the mirror overwrote), and the file it names is untouched.
func TestJSONBacking_MirrorRefused(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // the chain cannot open: not for checkAll
	t.Chdir(d)
	if err := os.WriteFile("base.raw", bytes.Repeat([]byte{0xab}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("victim", []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := `json:{"driver":"raw","file":{"driver":"mirror","file":"base.raw","target":"victim"}}`
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", spec, "top.qcow2", "1M")
	for _, args := range [][]string{{"commit", "top.qcow2"}, {"info", "--backing-chain", "top.qcow2"}, {"map", "top.qcow2"},
		{"io", "-c", "read 0 512", "top.qcow2"}, {"info", spec}, {"check", spec}} {
		if _, _, code := runQ(t, args...); code == 0 {
			t.Errorf("%q: succeeded", args)
		}
		if b, _ := os.ReadFile("victim"); string(b) != "precious" {
			t.Fatalf("%q wrote %d bytes over the file the header's mirror names", args, len(b))
		}
	}
}

// TestInfo_BackingInNodeWithoutDirectory: an image named by a spec whose
// qcow2 node is stored in a quorum node has no directory to resolve a
// relative backing name against: info prints "cannot determine actual
// path" and --backing-chain refuses it, in qemu-img's words; a spec
// whose qcow2 node is over a file names the backing file beside it.
// info printed a path cut out of the spec's JSON.
func TestInfo_BackingInNodeWithoutDirectory(t *testing.T) {
	d := qemuDir(t)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M")
	top := qemuOverlay(t, filepath.Join(d, "top.qcow2"), "base.qcow2", "qcow2")
	quorum := `json:{"driver":"qcow2","file":{"driver":"quorum","vote-threshold":1,"children":[{"driver":"file","filename":"` + top + `"}]}}`
	cor := `json:{"driver":"qcow2","file":{"driver":"raw","file":{"driver":"file","filename":"` + top + `"}}}`
	line := func(out string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "backing file:") {
				return l
			}
		}
		return ""
	}
	for _, spec := range []string{quorum, cor} {
		ours := mustQ(t, "info", "-U", spec)
		theirs := testkit.MustRun(t, "qemu-img", "info", "-U", spec)
		if line(ours) != line(theirs) {
			t.Errorf("info %s: %q, qemu-img %q", spec, line(ours), line(theirs))
		}
	}
	args := []string{"info", "-U", "--backing-chain", quorum}
	ours, oerr, code := runQ(t, args...)
	theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
	if ours != theirs || code != qcode || ourMessage(oerr) != qemuMessage(terr) {
		t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, ours, oerr, theirs, terr)
	}
}

// TestJSONBacking_RuntimeOptionsLikeQemu: a json: backing file name whose
// nodes set runtime options (aio, locking, cache, l2-cache-size) names
// its file in info --backing-chain and map as qemu-img does (QEMU leaves
// such options out of a node's name); qimg printed the JSON, and a disk
// size of 0 for it.
func TestJSONBacking_RuntimeOptionsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M", "write -P 0x5a 0 128k")
	spec := `json:{"driver":"qcow2","l2-cache-size":"1M","file":{"driver":"file","filename":"base.qcow2","aio":"threads","locking":"off","cache":{"direct":false}}}`
	qemuOverlay(t, filepath.Join(d, "top.qcow2"), spec, "qcow2", "write -P 0x33 64k 64k")
	for _, args := range [][]string{
		{"info", "--backing-chain", "top.qcow2"}, {"info", "--backing-chain", "--output=json", "top.qcow2"},
		{"map", "top.qcow2"}, {"info", spec},
	} {
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		if ours != theirs || code != qcode {
			t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, ours, oerr, theirs, terr)
		}
	}
	testkit.QemuCheck(t, "top.qcow2")
}
