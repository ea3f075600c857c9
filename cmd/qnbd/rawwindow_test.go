package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRawWindow_LikeQemuNbd: a raw driver's size and offset are refused
// as qemu-nbd refuses them (a size not a multiple of 512, which qnbd
// served; an offset or a window past the file's end), with QEMU's
// message; what qemu-nbd serves, qnbd serves at the same size.
func TestRawWindow_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	img := filepath.Join(dir, "r.raw")
	sh(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
	odd := filepath.Join(dir, "odd.raw")
	if err := os.WriteFile(odd, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(server string, args ...string) (string, error) {
		sock := filepath.Join(dir, "no.sock")
		cmd := exec.Command(server, append([]string{"-r", "-k", sock, "--image-opts"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if code, err := launch(t, sock, cmd); code != -1 {
			return out.String(), err
		}
		return "", nil // serves: accepted
	}
	for _, spec := range []string{
		"driver=raw,size=1000,file.filename=" + img,
		"driver=raw,size=1000,offset=512,file.filename=" + img,
		"driver=raw,size=4M,file.filename=" + img,
		"driver=raw,offset=2M,size=1000,file.filename=" + img,
		"driver=raw,offset=1025,file.filename=" + odd,
	} {
		qout, qerr := run("qemu-nbd", spec)
		_, msg, ok := strings.Cut(strings.TrimSpace(qout), "': ")
		if qerr == nil || !ok {
			t.Fatalf("qemu-nbd %s: %v\n%s", spec, qerr, qout)
		}
		if out, err := run(filepath.Join(bin, "qnbd"), spec); err == nil || !strings.Contains(out, msg) {
			t.Errorf("qnbd %s: %v\n%s\nqemu-nbd: %s", spec, err, out, msg)
		}
	}
	for _, spec := range []string{
		"driver=raw,offset=100,size=1024,file.filename=" + img,
		"driver=raw,size=1024,file.filename=" + odd,
	} {
		sub := shortDir(t)
		q := startQemuNbd(t, sub, "--image-opts", spec)
		s := startUnix(t, sub, "disk", "-r", "-A", "--image-opts", spec)
		if got, want := sh(t, "nbdinfo", "--size", s.uri), sh(t, "nbdinfo", "--size", q); got != want {
			t.Errorf("%s: qnbd size %s, qemu-nbd %s", spec, got, want)
		}
		s.stop()
	}
}
