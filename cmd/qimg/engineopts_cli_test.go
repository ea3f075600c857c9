package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEngineOpts_ReadOnlyRepairRefused: -o takes engine options but not
// read-only or repair, which bypassed what the commands' own flags do
// (-o repair=on let io write into an image marked corrupt, which
// qemu-io refuses; repairs are check -r's). The image is unchanged; the
// other engine options are still taken.
func TestEngineOpts_ReadOnlyRepairRefused(t *testing.T) {
	d := t.TempDir()
	img := filepath.Join(d, "a.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", img, "1M")
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"io", "-o", "repair=on", "-c", "write 0 512", img},
		{"io", "-o", "l2-cache-size=1M,read_only=off", "-c", "write 0 512", img},
		{"check", "-o", "repair=on", img},
		{"info", "-o", "read-only=on", img},
		{"map", "-o", "repair=off", img},
	} {
		_, stderr, code := runQ(t, args...)
		if code != 1 || !strings.Contains(stderr, "is not taken by -o") {
			t.Errorf("qimg %q: exit %d, %q: want exit 1 and the option refused", args, code, stderr)
		}
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the image changed")
	}
	mustQ(t, "io", "-o", "l2-cache-size=1M,prealloc=off", "-c", "write 0 512", img)
}
