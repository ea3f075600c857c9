package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestLUKS_ServeLikeQemuNbd: a LUKS volume (QEMU's luks format) opened
// with its key is served as qemu-nbd serves it: the same size, map and
// bytes, and writes through qnbd land encrypted where qemu-io reads them.
func TestLUKS_ServeLikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	p := filepath.Join(dir, "v.luks")
	const obj = "secret,id=s,data=pw"
	sh(t, "qemu-img", "create", "-q", "-f", "luks", "--object", obj, "-o", "key-secret=s,iter-time=20", p, "4M")
	spec := "driver=luks,key-secret=s,file.filename=" + p
	sh(t, "qemu-io", "--object", obj, "--image-opts", spec, "-c", "write -P 0x5a 1000 5000", "-c", "write -P 7 3M 1M")
	image := []string{"--object", obj, "--image-opts", spec}

	qsock := filepath.Join(shortDir(t), "q.sock")
	stopQemu := serveQemuNbd(t, qsock, append([]string{"-r", "-A", "-x", "q"}, image...)...)
	q := "nbd+unix:///q?socket=" + qsock
	s := startUnix(t, shortDir(t), "disk", append([]string{"-r"}, image...)...)
	for _, args := range [][]string{{"--size"}, {"--map"}} {
		want := sh(t, "nbdinfo", append(args, q)...)
		if got := sh(t, "nbdinfo", append(args, s.uri)...); got != want {
			t.Errorf("nbdinfo %v:\nqnbd:\n%s\nqemu-nbd:\n%s", args, got, want)
		}
	}
	ours, theirs := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "theirs.raw")
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri, ours)
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", q, theirs)
	s.stop()
	stopQemu()
	a, _ := os.ReadFile(ours)
	b, _ := os.ReadFile(theirs)
	if len(a) != 4<<20 || !bytes.Equal(a, b) {
		t.Fatalf("read %d bytes through qnbd, %d through qemu-nbd, equal %v", len(a), len(b), bytes.Equal(a, b))
	}

	// Served writable: unaligned writes and zeros through qnbd.
	w := shortDir(t)
	sock := filepath.Join(w, "w.sock")
	uri := "nbd+unix:///?socket=" + sock
	ws := start(t, uri, sock, append([]string{"-k", sock}, image...)...)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 100 300", "-c", "write -z 3M 4k", "-c", "write -P 0x22 4000 8k", uri)
	ws.stop()
	sh(t, "qemu-io", "--object", obj, "--image-opts", spec, "-c", "read -P 0x11 100 300", "-c", "read -P 0x5a 1000 3000",
		"-c", "read -P 0x22 4000 8k", "-c", "read -P 0 3M 4k", "-c", "read -P 7 3076k 4k")
}
