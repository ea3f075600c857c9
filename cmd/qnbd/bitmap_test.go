package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qnbd -B NAME offers the image's dirty bitmap as the metadata context
// qemu:dirty-bitmap:NAME, as qemu-nbd -B does: nbdinfo's map of it is
// qemu-nbd's, read-only and writable, and after writes through qnbd
// (a writable export's bitmap is maintained: the writes show); an
// unknown or inconsistent bitmap is refused with qemu-nbd's message.
func TestBitmapExport_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	img := filepath.Join(dir, "img")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	sh(t, "qemu-img", "bitmap", "--add", "-g", "4k", img, "b0")
	sh(t, "qemu-io", "-c", "write 1M 4k", "-c", "write 5M 1M", "-c", "write 15M 8k", "-f", "qcow2", img)
	want := testkit.DirtyMap(t, img, "b0")
	for _, ro := range []bool{true, false} {
		args := []string{"-f", "qcow2", "-B", "b0", img}
		if ro {
			args = append([]string{"-r"}, args...)
		}
		s := startUnix(t, dir, "", args...)
		if got := sh(t, "nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri); got != want {
			t.Errorf("read-only %v: nbdinfo --map=qemu:dirty-bitmap:b0:\n%s\nqemu-nbd's:\n%s", ro, got, want)
		}
		if ctx := sh(t, "nbdinfo", "--list", s.uri); !strings.Contains(ctx, "qemu:dirty-bitmap:b0") {
			t.Errorf("read-only %v: the context is not listed:\n%s", ro, ctx)
		}
		if !ro {
			// A write through qnbd dirties the maintained bitmap.
			sh(t, "qemu-io", "-f", "raw", "-c", "write 9M 4k", s.uri)
			got := sh(t, "nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri)
			s.stop()
			if after := testkit.DirtyMap(t, img, "b0"); got != after || !strings.Contains(after, "9437184") {
				t.Errorf("after a write: qnbd's map:\n%s\nqemu-nbd's:\n%s", got, after)
			}
			continue
		}
		s.stop()
	}
	// A bitmap of the backing file (qemu-nbd 7.2 looks down the chain;
	// qnbd said it was not found), and with -s, under the temporary
	// overlay (review 53).
	top := filepath.Join(dir, "top")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", top)
	want = testkit.DirtyMap(t, img, "b0") // with the write above
	for _, args := range [][]string{{"-r", "-f", "qcow2", "-B", "b0", top}, {"-s", "-r", "-f", "qcow2", "-B", "b0", img}} {
		s := startUnix(t, dir, "", args...)
		if got := sh(t, "nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri); got != want {
			t.Errorf("qnbd %v: nbdinfo --map=qemu:dirty-bitmap:b0:\n%s\nqemu-nbd's:\n%s", args, got, want)
		}
		s.stop()
	}
	for _, name := range []string{"nope"} {
		qcode, qerr := runServer(t, "qemu-nbd", "-f", "qcow2", "-B", name, img)
		code, stderr := runServer(t, filepath.Join(bin, "qnbd"), "-f", "qcow2", "-B", name, img)
		if code != qcode || strings.TrimPrefix(stderr, "qnbd: ") != strings.TrimPrefix(qerr, "qemu-nbd: ") {
			t.Errorf("-B %s: qemu-nbd exit %d %q, qnbd exit %d %q", name, qcode, qerr, code, stderr)
		}
	}
	check(t, img)
}
