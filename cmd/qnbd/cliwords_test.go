package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// asQemuNbd turns qnbd's name in its messages into qemu-nbd's.
var asQemuNbd = strings.NewReplacer("qnbd: ", "qemu-nbd: ", "`qnbd --help'", "`qemu-nbd --help'")

// runTool runs a server binary that must fail at once and returns its
// exit code (-1: it was still running after launchGuard) and stderr.
func runTool(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	return runToolOn(t, "", name, args...)
}

// runToolOn is runTool for a server that may serve on the Unix socket
// sock: -1 as soon as it serves there (launch).
func runToolOn(t *testing.T, sock, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var e bytes.Buffer
	cmd.Stderr = &e
	code, _ := launch(t, sock, cmd)
	return code, e.String()
}

// TestCLIErrors_LikeQemuNbd: a command line qemu-nbd refuses, qnbd
// refuses in its words, with its exit code: getopt's complaints and the
// --help line, the argument count, the option values its option loop
// checks (cache, aio, discard, detect-zeroes, -e, -k, -l, each of -n,
// --cache, --aio, --discard given once), -L's incompatibilities and its
// connection failure, a port or host that does not resolve, a socket
// that cannot be bound, a pid file that cannot be created, an unknown
// driver, TLS credentials that do not exist, and a forked server's
// failure (said once, by the server). qnbd said all of these in its own
// words, took -n with --cache, --aio twice and a relative socket path,
// and connected in list mode whatever else was asked.
func TestCLIErrors_LikeQemuNbd(t *testing.T) {
	testkit.NeedQemu(t)
	if _, err := exec.LookPath("qemu-nbd"); err != nil {
		t.Skip("qemu-nbd not installed")
	}
	d := shortDir(t)
	img := filepath.Join(d, "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	sock := filepath.Join(d, "s")
	for _, args := range [][]string{
		{}, {"-f", "qcow2"}, {img, "extra"}, {"-x"}, {"--bogus", img}, {"-P", "1", img}, {"-f", "bogus", img},
		{"-p", "abc", img}, {"-p", "0x10", img}, {"-p", "-1", img}, {"-e", "-1", img}, {"-e", "abc", img}, {"-e", "1x", img},
		{"-e", "99999999999", img}, {"--cache=bogus", img}, {"--cache=none", "--nocache", img}, {"-n", "-n", img},
		{"--aio=bogus", img}, {"--aio=threads", "--aio=threads", img}, {"--discard=bogus", img},
		{"--discard=on", "--discard=on", img}, {"--detect-zeroes=bogus", img}, {"--detect-zeroes=unmap", img},
		{"-k", "rel.sock", img}, {"-k", filepath.Join(d, "nosuch", "s"), img}, {"-b", "1.2.3.4.5", img},
		{"--pid-file=" + filepath.Join(d, "nosuch", "p"), "-k", sock, img}, {"--tls-creds=x", img},
		{"--tls-authz=z", "--tls-creds=x", img}, {"--tls-authz=z", img}, {"-l", "snapshot.bogus=1", img},
		{"--image-opts", "driver=bogus"}, {"--image-opts", "-f", "qcow2", "-k", sock, "driver=qcow2,file.filename=" + img},
		{"--object", "bogus,id=x", img}, {"--object", "secret,id=s", img},
		{"-L", img}, {"-L", "-x", "foo"}, {"-L", "-f", "raw"}, {"-L", "--cache=none"}, {"-L", "--fork"},
		{"-L", "-k", filepath.Join(d, "nosuch.sock")},
		{"-t", "--fork", "-k", sock, filepath.Join(d, "nosuch.qcow2")},
	} {
		code, e := runTool(t, filepath.Join(bin, "qnbd"), args...)
		qcode, qe := runTool(t, "qemu-nbd", args...)
		if code != qcode || asQemuNbd.Replace(e) != qe {
			t.Errorf("%q: qnbd exit %d\n%sqemu-nbd exit %d\n%s", args, code, e, qcode, qe)
		}
	}
}
