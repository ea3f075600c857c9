package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlagsRefusedLikeQemuNbd: option combinations qemu-nbd refuses at
// start-up, qnbd refuses too: --detect-zeroes=unmap without
// --discard=unmap (qemu-nbd: "setting detect-zeroes to unmap is not
// allowed without setting discard operation to unmap"), and an export
// name or description longer than the 4096 bytes the protocol allows a
// string (section "Conventions"; no client could ask for such a name,
// and NBD_OPT_LIST and NBD_INFO_DESCRIPTION would carry too long a
// string). The combinations qemu-nbd accepts are accepted. When
// qemu-nbd is installed it is asked too, so the cases stay the oracle's.
func TestFlagsRefusedLikeQemuNbd(t *testing.T) {
	long := strings.Repeat("a", 4097)
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--detect-zeroes=unmap"}, false},
		{[]string{"--detect-zeroes=unmap", "--discard=ignore"}, false},
		{[]string{"--discard=unmap", "--detect-zeroes=unmap"}, true},
		{[]string{"--discard=on", "--detect-zeroes=unmap"}, true},
		{[]string{"--detect-zeroes=on"}, true},
		{[]string{"-x", long}, false},
		{[]string{"-D", long}, false},
		{[]string{"-x", long[:4096], "-D", long[:4096]}, true},
	} {
		f, err := parseFlags(append(c.args, "img.qcow2"))
		if err == nil {
			_, err = configure(f)
		}
		if (err == nil) != c.ok {
			t.Errorf("qnbd %.60q: error %v, want accepted %v", c.args, err, c.ok)
		}
		if c.ok {
			continue
		}
		if _, err := exec.LookPath("qemu-nbd"); err != nil {
			continue
		}
		// qemu-nbd refuses these before it opens the image: a missing
		// one must not be what it complains about.
		dir := shortDir(t)
		sock := filepath.Join(dir, "s")
		cmd := exec.Command("qemu-nbd", append(c.args, "-k", sock, filepath.Join(dir, "missing.qcow2"))...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if code, err := launch(t, sock, cmd); code <= 0 || strings.Contains(out.String(), "missing.qcow2") {
			t.Errorf("qemu-nbd %.60q does not refuse the options: exit %d (-1: serves), %v\n%.300s", c.args, code, err, out.String())
		}
	}
}
