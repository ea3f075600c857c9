package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// TestOpenError_LikeQemuNbd: an image qnbd cannot open fails as it fails
// qemu-nbd 7.2: the same exit code, and a first line that names the
// image as it was given (a file name, or the whole spec) in qemu-nbd's
// words, "Failed to blk_new_open 'IMAGE': ", before qnbd's own reason. A
// missing file (also probed, or named by a spec or json:), a file of
// another format than -f says, a directory, an image another process
// writes (locked), an encrypted image without its key. A probed vmdk
// whose grains overlap, which qemu-nbd serves read-write, qnbd refuses
// without -r (vmdk_test.go): its refusal names the file the same way.
func TestOpenError_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	sh(t, "qemu-img", "create", "-q", "-f", "raw", p("plain.raw"), "1M")
	testkit.OverlappingVMDK(t, p("disk.vmdk"))
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", p("locked.qcow2"), "1M")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw",
		"-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", p("enc.qcow2"), "1M")
	holdWriteLock(t, p("locked.qcow2"))
	missing := p("missing.qcow2")
	for _, c := range []struct {
		name       string
		args       []string
		qemuServes bool // qemu-nbd serves it, qnbd refuses it
	}{
		{"missing", []string{"-f", "qcow2", missing}, false},
		{"missing-probed", []string{missing}, false},
		{"not-qcow2", []string{"-f", "qcow2", p("plain.raw")}, false},
		{"directory", []string{"-f", "qcow2", dir}, false},
		{"locked", []string{"-f", "qcow2", p("locked.qcow2")}, false},
		{"locked-read-only", []string{"-r", "-f", "qcow2", p("locked.qcow2")}, false},
		{"locked-raw", []string{"-f", "raw", p("locked.qcow2")}, false},
		{"locked-spec", []string{"--image-opts", "driver=qcow2,file.filename=" + p("locked.qcow2")}, false},
		{"encrypted", []string{"-f", "qcow2", p("enc.qcow2")}, false},
		{"encrypted-spec", []string{"--image-opts", "driver=qcow2,file.filename=" + p("enc.qcow2")}, false},
		{"spec-missing", []string{"--image-opts", "driver=qcow2,file.filename=" + missing}, false},
		{"spec-raw-missing", []string{"--image-opts", "driver=raw,file.filename=" + missing}, false},
		{"spec-file-missing", []string{"--image-opts", "driver=file,filename=" + missing}, false},
		{"json-missing", []string{`json:{"driver":"qcow2","file":{"driver":"file","filename":"` + missing + `"}}`}, false},
		{"probed-vmdk", []string{p("disk.vmdk")}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			image := c.args[len(c.args)-1]
			qcode, qerr := runServer(t, "qemu-nbd", c.args...)
			code, stderr := runServer(t, filepath.Join(bin, "qnbd"), c.args...)
			want := "qnbd: Failed to blk_new_open '" + image + "': "
			if c.qemuServes {
				if qcode != -1 {
					t.Fatalf("qemu-nbd %q: exit %d, expected it to serve:\n%s", c.args, qcode, qerr)
				}
				if code != 1 {
					t.Errorf("qnbd %q: exit %d, want 1:\n%s", c.args, code, stderr)
				}
			} else {
				// The oracle names the image so.
				if first, _, _ := strings.Cut(qerr, "\n"); !strings.HasPrefix(first, "qemu-nbd"+want[len("qnbd"):]) {
					t.Fatalf("qemu-nbd %q: exit %d, first line %q", c.args, qcode, first)
				}
				if code != qcode {
					t.Errorf("qnbd %q: exit %d, qemu-nbd %d", c.args, code, qcode)
				}
			}
			if first, _, _ := strings.Cut(stderr, "\n"); !strings.HasPrefix(first, want) || len(first) == len(want) {
				t.Errorf("qnbd %q: first line %q, want %q and the reason\nqemu-nbd:\n%s", c.args, first, want, qerr)
			}
		})
	}
}

// runServer runs an NBD server on a socket of its own until it exits (its
// exit code and stderr) or serves there: then the exit code is -1.
func runServer(t *testing.T, server string, args ...string) (code int, stderr string) {
	t.Helper()
	sock := filepath.Join(shortDir(t), "s.sock")
	return runToolOn(t, sock, server, append([]string{"-k", sock}, args...)...)
}

// holdWriteLock has qemu-io write path until the test ends, and waits
// until /proc/locks shows it holding byte 101 (QEMU's write permission).
// Polling with a QEMU tool instead would race qemu-io's open: a reader
// that opens first locks writers out, and qemu-io exits.
func holdWriteLock(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	q := exec.Command("qemu-io", "-f", "qcow2", "-c", "sleep 100000000", path)
	var e bytes.Buffer
	q.Stderr = &e
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { q.Wait(); close(done) }()
	t.Cleanup(func() { q.Process.Kill(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if testkit.HoldsLockByte(path, 101) {
			return
		}
		select {
		case <-done:
			t.Fatalf("qemu-io exited: %s", e.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-io does not lock %s", path)
		}
	}
}
