package main

import (
	"path/filepath"
	"testing"
)

// TestJSONName_FormatWinsLikeQemuNbd: -f over a json: name is the root's
// driver, as qemu-nbd gives the options outside the name priority: a
// qcow2 file named json:{"driver":"raw",...} with -f qcow2 is served as
// the qcow2 image. qnbd refused -f with any spec ("--image-opts and -f
// are mutually exclusive", which stays for --image-opts).
func TestJSONName_FormatWinsLikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := shortDir(t)
	img := filepath.Join(dir, "x.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	sh(t, "qemu-io", "-c", "write -P 7 1M 64k", img)
	spec := `json:{"driver":"raw","file":{"driver":"file","filename":"` + img + `"}}`
	q := startQemuNbd(t, dir, "-f", "qcow2", spec)
	s := startUnix(t, dir, "disk", "-r", "-A", "-f", "qcow2", spec)
	defer s.stop()
	for _, args := range [][]string{{"--size"}, {"--map"}} {
		want := sh(t, "nbdinfo", append(args, q)...)
		if got := sh(t, "nbdinfo", append(args, s.uri)...); got != want {
			t.Errorf("nbdinfo %v:\nqnbd:\n%s\nqemu-nbd:\n%s", args, got, want)
		}
	}
}
