package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestVMDK_ServeLikeQemuNbd: VMDK images (monolithicSparse probed and
// -f vmdk, streamOptimized, monolithicFlat, twoGbMaxExtentSparse, zeroed
// grains, an image over a parent that is smaller than it, and a qcow2
// image over that one) served
// read-only by qnbd show nbdinfo the size, the allocation and the
// allocation depth qemu-nbd shows, and read the bytes qemu-nbd reads.
// Without -r, monolithicSparse, monolithicFlat and twoGbMaxExtentSparse
// images and a snapshot over a parent take the writes qemu-nbd takes;
// one whose grains overlap is refused.
func TestVMDK_ServeLikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	for _, sub := range []string{"monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse"} {
		p := filepath.Join(dir, sub+".vmdk")
		sh(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, p, "10M")
		sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 64k", "-c", "write -P 7 3M 64k", "-c", "write -P 9 6M 1M", p)
	}
	z := filepath.Join(dir, "zeroed.vmdk")
	sh(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", z, "10M")
	sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 1 0 1M", "-c", "write -z 64k 128k", z)
	// A snapshot over the monolithicSparse image, larger than it.
	top := filepath.Join(dir, "top.vmdk")
	sh(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", "monolithicSparse.vmdk", "-F", "vmdk", top, "12M")
	sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x33 32k 64k", "-c", "write -P 0x44 11M 64k", top)
	// A qcow2 image over that snapshot (qcow2's Q23), larger again.
	over := filepath.Join(dir, "over.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "top.vmdk", "-F", "vmdk", over, "14M")
	sh(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 64k", "-c", "write -z 3M 64k", over)
	for _, c := range []struct {
		name  string
		image []string
	}{
		{"sparse", []string{"-f", "vmdk", filepath.Join(dir, "monolithicSparse.vmdk")}},
		{"sparse-probed", []string{filepath.Join(dir, "monolithicSparse.vmdk")}},
		{"stream", []string{"-f", "vmdk", filepath.Join(dir, "streamOptimized.vmdk")}},
		{"flat", []string{"-f", "vmdk", filepath.Join(dir, "monolithicFlat.vmdk")}},
		{"split-sparse", []string{filepath.Join(dir, "twoGbMaxExtentSparse.vmdk")}},
		{"zeroed", []string{"-f", "vmdk", z}},
		{"parent", []string{"-f", "vmdk", top}},
		{"qcow2-over-vmdk", []string{"-f", "qcow2", over}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sub := shortDir(t)
			q := startQemuNbd(t, sub, c.image...)
			s := startUnix(t, sub, "disk", append([]string{"-r", "-A"}, c.image...)...)
			defer s.stop()
			for _, args := range [][]string{{"--size"}, {"--map"}, {"--map=qemu:allocation-depth"}} {
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
	// Without -r: an image whose grains overlap is refused at start
	// (qring does not write those)...
	overlap := filepath.Join(dir, "overlap.vmdk")
	testkit.OverlappingVMDK(t, overlap)
	for _, args := range [][]string{{"-f", "vmdk", overlap}, {overlap}} {
		wsock := filepath.Join(dir, "w.sock")
		cmd := exec.Command(filepath.Join(bin, "qnbd"), append([]string{"-k", wsock}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if code, err := launch(t, wsock, cmd); code <= 0 || !strings.Contains(out.String(), "grains or metadata overlap") {
			t.Errorf("qnbd %q: exit %d (-1: serves), %v\n%s", args, code, err, out.String())
		}
	}
	// ... and the others served writable, as qemu-nbd serves them: the
	// same writes through each server (into allocated and new grains,
	// zeros, a trim) leave images qemu-img reads alike and qemu-img
	// check passes.
	for _, subformat := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "snapshot"} {
		var raws [2][]byte
		for i, server := range []string{"qnbd", "qemu-nbd"} {
			w := shortDir(t)
			img := filepath.Join(w, "w.vmdk")
			if subformat == "snapshot" {
				// Over a parent: new grains copy its bytes first.
				sh(t, "qemu-img", "create", "-q", "-f", "vmdk", filepath.Join(w, "b.vmdk"), "10M")
				sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x0f 0 10M", filepath.Join(w, "b.vmdk"))
				sh(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "b.vmdk", "-F", "vmdk", img)
			} else {
				sh(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+subformat, img, "10M")
			}
			sh(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x10 0 128k", img)
			sock := filepath.Join(w, "w.sock")
			uri := "nbd+unix:///?socket=" + sock
			var stop func()
			if server == "qemu-nbd" {
				stop = serveQemuNbd(t, sock, "-f", "vmdk", "--discard=unmap", img)
			} else {
				s := start(t, uri, sock, "-k", sock, "-f", "vmdk", "--discard=unmap", img)
				stop = s.stop
			}
			sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 4k 4k", "-c", "write -P 0x22 5M 8k",
				"-c", "write -z 6M 64k", "-c", "write -z 64k 4k", "-c", "discard 8k 4k", "-c", "write -P 0x33 10484224 512", uri)
			stop()
			if out, err := exec.Command("qemu-img", "check", "-f", "vmdk", img).CombinedOutput(); err != nil {
				t.Errorf("%s %s: qemu-img check: %v\n%s", subformat, server, err, out)
			}
			raw := filepath.Join(w, "w.raw")
			sh(t, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, raw)
			raws[i], _ = os.ReadFile(raw)
		}
		if len(raws[0]) == 0 || !bytes.Equal(raws[0], raws[1]) {
			t.Errorf("%s written through qnbd and qemu-nbd: the images differ (%d and %d bytes)", subformat, len(raws[0]), len(raws[1]))
		}
	}
}
