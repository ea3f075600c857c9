package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An encrypted image served as qemu-nbd serves it (--object secret
// --image-opts driver=qcow2,encrypt.key-secret=...): the client sees
// plaintext, writes misaligned, and qemu-io reads the image file with
// the same secret afterwards.
func TestEncrypted(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := shortDir(t)
	img := filepath.Join(dir, "e.qcow2")
	sh(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data=abc",
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", img, "4M")
	opts := "driver=qcow2,encrypt.key-secret=sec0,file.filename=" + img
	sh(t, "qemu-io", "--object", "secret,id=sec0,data=abc", "--image-opts", opts, "-c", "write -P 0x11 0 1M")
	s := startUnix(t, dir, "e", "--object", "secret,id=sec0,data=abc", "--image-opts", opts)
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c", "write -P 0x22 66536 3000", "-c", "flush", s.uri)
	s.stop()
	sh(t, "qemu-io", "--object", "secret,id=sec0,data=abc", "--image-opts", opts,
		"-c", "read -P 0x11 0 66536", "-c", "read -P 0x22 66536 3000", "-c", "read -P 0x11 69536 979040")
	testkit.QemuCheckSecret(t, img, "abc")
	if out := sh(t, filepath.Join(bin, "qimg"), "check", "--object", "secret,id=sec0,data=abc", "--image-opts", opts); !strings.Contains(out, "No errors were found") {
		t.Fatalf("qimg check %s:\n%s", img, out)
	}
}

// An overlay over an encrypted base served with the base's key
// (backing.encrypt.key-secret, as qemu-nbd takes it): the client reads
// the base's plaintext through the overlay and its writes land in the
// overlay, which qemu-io reads with the same options.
func TestEncryptedBacking(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := shortDir(t)
	base, top := filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "t.qcow2")
	sec := []string{"--object", "secret,id=sec0,data=abc"}
	sh(t, "qemu-img", append(append([]string{"create", "-f", "qcow2"}, sec...),
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", base, "4M")...)
	sh(t, "qemu-io", append(sec, "--image-opts", "driver=qcow2,encrypt.key-secret=sec0,file.filename="+base, "-c", "write -P 0x11 0 1M")...)
	sh(t, "qemu-img", "create", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	opts := "driver=qcow2,backing.encrypt.key-secret=sec0,file.filename=" + top
	s := startUnix(t, dir, "e", append(sec, "--image-opts", opts)...)
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c", "write -P 0x22 66536 3000", "-c", "flush", s.uri)
	s.stop()
	sh(t, "qemu-io", append(sec, "--image-opts", opts,
		"-c", "read -P 0x11 0 66536", "-c", "read -P 0x22 66536 3000", "-c", "read -P 0x11 69536 979040", "-c", "read -P 0 1M 3M")...)
	sh(t, "qemu-img", append(append([]string{"check"}, sec...), "--image-opts", opts)...)
}
