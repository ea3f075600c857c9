package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVPC_ServeLikeQemuNbd: a VHD image (dynamic, probed or -f vpc, and
// fixed) served read-only by qnbd shows nbdinfo the size and the
// allocation qemu-nbd shows, and reads the bytes qemu-nbd reads.
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
			s := startUnix(t, sub, "disk", append([]string{"-r"}, c.image...)...)
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
	// Without -r: refused at start, qring reads VHD images only.
	for _, args := range [][]string{{"-f", "vpc", filepath.Join(dir, "dynamic.vhd")}, {filepath.Join(dir, "dynamic.vhd")}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "qnbd"), append([]string{"-k", filepath.Join(dir, "w.sock")}, args...)...).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut || !strings.Contains(string(out), "read-only") {
			t.Errorf("qnbd %q: %v\n%s", args, err, out)
		}
	}
}
