package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVPC_ServeLikeQemuNbd: a VHD image (dynamic, probed or -f vpc, and
// fixed) served read-only by qnbd shows nbdinfo the size and the
// allocation qemu-nbd shows, and reads the bytes qemu-nbd reads; served
// writable, it takes the writes qemu-nbd takes.
func TestVPC_ServeLikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	for _, sub := range []string{"dynamic", "fixed"} {
		p := filepath.Join(dir, sub+".vhd")
		sh(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat="+sub, p, "10M")
		sh(t, "qemu-io", "-f", "vpc", "-c", "write -P 0x5a 0 64k", "-c", "write -P 7 3M 512", "-c", "write -P 9 6M 1M", p)
	}
	for _, c := range []struct {
		name  string
		image []string
	}{
		{"dynamic", []string{"-f", "vpc", filepath.Join(dir, "dynamic.vhd")}},
		{"dynamic-probed", []string{filepath.Join(dir, "dynamic.vhd")}},
		{"fixed", []string{"-f", "vpc", filepath.Join(dir, "fixed.vhd")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sub := shortDir(t)
			q := startQemuNbd(t, sub, c.image...)
			s := startUnix(t, sub, "disk", append([]string{"-r", "-A"}, c.image...)...)
			defer s.stop()
			for _, args := range [][]string{{"--size"}, {"--map"}} {
				want := sh(t, "nbdinfo", append(args, q)...)
				if got := sh(t, "nbdinfo", append(args, s.uri)...); got != want {
					t.Errorf("nbdinfo %v:\nqnbd:\n%s\nqemu-nbd:\n%s", args, got, want)
				}
			}
			ours, theirs := filepath.Join(sub, "ours.raw"), filepath.Join(sub, "theirs.raw")
			sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri, ours)
			sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", q, theirs)
			a, _ := os.ReadFile(ours)
			b, _ := os.ReadFile(theirs)
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("read %d bytes through qnbd, %d through qemu-nbd, equal %v", len(a), len(b), bytes.Equal(a, b))
			}
		})
	}
	// Without -r: served writable, as qemu-nbd serves it. The same
	// writes through each server (into allocated and new blocks, zeros,
	// and a trim, which keeps the bytes as QEMU's vpc does) leave images
	// qemu-img reads alike.
	for _, sub := range []string{"dynamic", "fixed"} {
		var raws [2][]byte
		for i, server := range []string{"qnbd", "qemu-nbd"} {
			w := shortDir(t)
			img := filepath.Join(w, "w.vhd")
			b, _ := os.ReadFile(filepath.Join(dir, sub+".vhd"))
			if err := os.WriteFile(img, b, 0o644); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(w, "w.sock")
			uri := "nbd+unix:///?socket=" + sock
			var stop func()
			if server == "qemu-nbd" {
				stop = serveQemuNbd(t, sock, "-f", "vpc", "--discard=unmap", img)
			} else {
				s := start(t, uri, sock, "-k", sock, "-f", "vpc", "--discard=unmap", img)
				stop = s.stop
			}
			sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 4k 4k", "-c", "write -P 0x22 5M 8k",
				"-c", "write -z 6M 64k", "-c", "write -P 0x33 10484224 512", "-c", "discard 4k 2k", uri)
			stop()
			raw := filepath.Join(w, "w.raw")
			sh(t, "qemu-img", "convert", "-f", "vpc", "-O", "raw", img, raw)
			raws[i], _ = os.ReadFile(raw)
		}
		if len(raws[0]) == 0 || !bytes.Equal(raws[0], raws[1]) {
			t.Errorf("%s: written through qnbd and qemu-nbd, the images differ (%d and %d bytes)", sub, len(raws[0]), len(raws[1]))
		}
	}
	// Probed, a dynamic disk is served writable as vpc: no warning about
	// a raw image probed, and writes at block 0 land.
	w := shortDir(t)
	img := filepath.Join(w, "p.vhd")
	b, _ := os.ReadFile(filepath.Join(dir, "dynamic.vhd"))
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(w, "p.sock")
	srv := start(t, "nbd+unix:///?socket="+sock, sock, "-k", sock, img)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4k", "nbd+unix:///?socket="+sock)
	srv.stop()
	if strings.Contains(srv.stderr.String(), "probing guessed raw") {
		t.Errorf("qnbd warned of a raw image probed:\n%s", srv.stderr.String())
	}
	sh(t, "qemu-io", "-f", "vpc", "-c", "read -P 0x44 0 4k", img)
}
