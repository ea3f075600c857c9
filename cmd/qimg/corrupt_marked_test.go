package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// Every writable open of an image marked corrupt is refused in QEMU's
// words, changing nothing (qimg opened it read-only and failed later:
// "image is read-only"); check and info still open it.
func TestCorruptMarked_WritableOpensLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := t.TempDir() // marked corrupt on purpose: not checked at the end
	for _, c := range []struct {
		tool, cmd string
		args      []string
	}{
		{"qemu-img", "resize", []string{"{d}/c.qcow2", "2M"}},
		{"qemu-img", "snapshot", []string{"-c", "s", "{d}/c.qcow2"}},
		{"qemu-img", "amend", []string{"-o", "lazy_refcounts=on", "{d}/c.qcow2"}},
		{"qemu-img", "bitmap", []string{"--add", "{d}/c.qcow2", "b"}},
		{"qemu-img", "rebase", []string{"-u", "-b", "", "{d}/c.qcow2"}},
		{"qemu-img", "commit", []string{"{d}/c.qcow2"}},
		{"qemu-img", "bench", []string{"-w", "-c", "1", "{d}/c.qcow2"}},
		{"qemu-img", "convert", []string{"-n", "-f", "raw", "-O", "qcow2", "{d}/s.raw", "{d}/c.qcow2"}},
		{"qemu-img", "check", []string{"{d}/c.qcow2"}},
		{"qemu-io", "io", []string{"-c", "write 0 512", "{d}/c.qcow2"}},
		{"qemu-io", "io", []string{"-r", "-c", "read 0 512", "{d}/c.qcow2"}},
		// Through a spec: no file name before QEMU's words.
		{"qemu-img", "resize", []string{`json:{"driver":"qcow2","file":{"filename":"{d}/c.qcow2"}}`, "2M"}},
		{"qemu-io", "io", []string{"-c", "write 0 512", "--image-opts", "driver=qcow2,file.filename={d}/c.qcow2"}},
	} {
		var want []byte
		q, o := runBoth(t, base, c.tool, c.cmd, c.args, func(d string) {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(d, "s.raw"), "1M")
			p := filepath.Join(d, "c.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
			b := mustReadFile(t, p)
			b[79] |= 2 // incompatible_features: corrupt
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			want = b
		})
		if !q.same(o) {
			t.Errorf("%s %v: qimg %v\n%s %v", c.cmd, c.args, q, c.tool, o)
		}
		if got := mustReadFile(t, filepath.Join(q.dir, "c.qcow2")); string(got) != string(want) {
			t.Errorf("%s %v changed the image", c.cmd, c.args)
		}
	}
}
