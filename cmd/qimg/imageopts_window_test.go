package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestImageOpts_RawWindowLikeQemu: --image-opts with a raw window
// (driver=raw,offset=,size=) opens, as qemu-img opens it (it was
// refused: "Block format 'raw' does not support the option 'offset'"):
// map names the file and its offsets, info its size and disk size,
// convert copies the window; and map --image-opts names the file in its
// File column (it printed the option string), as qemu-img's.
func TestImageOpts_RawWindowLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Chdir(d)
	qemuImage(t, filepath.Join(d, "r.raw"), "raw", "1M", "write -P 0x42 512 4k", "write -P 0x43 64k 4k")
	qemuImage(t, filepath.Join(d, "b.qcow2"), "qcow2", "1M", "write -P 0x11 0 64k")
	win := "driver=raw,offset=512,size=4096,file.filename=r.raw"
	for _, args := range [][]string{
		{"map", "--image-opts", win}, {"map", "--output=json", "--image-opts", win},
		{"map", "--image-opts", "driver=raw,offset=64k,file.filename=r.raw"},
		{"map", "--image-opts", "driver=qcow2,file.filename=b.qcow2"},
		{"compare", "--image-opts", win, win},
	} {
		ours, oerr, code := runQ(t, args...)
		theirs, terr, qcode := testkit.Run(t, "qemu-img", args...)
		ours = strings.ReplaceAll(ours, `"compressed": false, `, "") // QEMU 8.2's map layout (known)
		if ours != theirs || code != qcode {
			t.Errorf("%q: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s", args, code, qcode, ours, oerr, theirs, terr)
		}
	}
	line := func(out, key string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, key) {
				return l
			}
		}
		return ""
	}
	ours, theirs := mustQ(t, "info", "--image-opts", win), testkit.MustRun(t, "qemu-img", "info", "--image-opts", win)
	for _, k := range []string{"file format:", "virtual size:", "disk size:"} {
		if line(ours, k) != line(theirs, k) {
			t.Errorf("info: %q, qemu-img %q", line(ours, k), line(theirs, k))
		}
	}
	mustQ(t, "convert", "-O", "raw", "--image-opts", win, "ours.raw")
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", "--image-opts", win, "theirs.raw")
	testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "ours.raw", "theirs.raw")
}
