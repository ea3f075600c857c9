package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestProbedRaw_BenchConvertLikeQemu: qemu-img bench -w and convert -n
// into a raw image whose format was probed (a file name, or an
// --image-opts spec without driver=) apply QEMU's raw restriction: the
// warning, and a write that would make the first sector probe as
// another format fails with EPERM. qimg bench wrote the qcow2 magic's
// last byte into almost.raw (a qcow2 header whose first byte is 0) and
// convert -n --target-image-opts a whole header: both files then probed
// as qcow2. Output (qimg's "qimg: CMD: " prefix aside), exit codes and
// the files are qemu-img's.
func TestProbedRaw_BenchConvertLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	hdr := qcow2Header(t, base)
	setup := func(d string) {
		almost := make([]byte, 1<<20)
		copy(almost[1:512], hdr[1:512])
		for name, b := range map[string][]byte{"almost.raw": almost, "hdr.raw": append(hdr[:512:512], make([]byte, 1<<20-512)...), "base.raw": make([]byte, 1<<20)} {
			if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, c := range []struct {
		cmd  string
		args []string
	}{
		{"bench", []string{"-w", "-c", "1", "-s", "1", "--pattern=0x51", "{d}/almost.raw"}},
		{"bench", []string{"-w", "-c", "1", "-s", "1", "--pattern=0x51", "--image-opts", "file.filename={d}/almost.raw"}},
		{"bench", []string{"-w", "-c", "1", "-s", "1", "--pattern=0x51", "-f", "raw", "{d}/almost.raw"}},
		{"convert", []string{"-f", "raw", "-n", "--target-image-opts", "{d}/hdr.raw", "file.filename={d}/base.raw"}},
		{"convert", []string{"-f", "raw", "-n", "--target-image-opts", "{d}/hdr.raw", "driver=raw,file.filename={d}/base.raw"}},
	} {
		q, o := runBoth(t, base, "qemu-img", c.cmd, c.args, setup)
		same, err := sameFiles(q.dir, o.dir, "almost.raw", "base.raw")
		if err != nil {
			t.Fatal(err)
		}
		if !q.same(o) || !same {
			t.Errorf("case %d %s %q:\nqimg %v\nqemu-img %v\nfiles equal: %v", i, c.cmd, c.args, q, o, same)
		}
	}
}
