package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A backing file name with a protocol prefix, as a header may hold one
// ("file:base.qcow2", "foo:bar"), is read as QEMU reads it: the prefix
// names a protocol ("file:" is stripped, an unknown one refused), and
// the name is taken as it is, relative to the working directory, not to
// the image's directory (bdrv_make_absolute_filename). Through the
// engine (convert) and qimg's own chain walk (info --backing-chain),
// from the images' directory and from another one.
func TestBackingProtocolName_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir() // not a workDir: its end-of-test check runs elsewhere
	other := filepath.Join(dir, "elsewhere")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 64k", base)
	for _, b := range []struct{ img, backing, fmt string }{
		{"file.qcow2", "file:base.qcow2", "qcow2"},
		{"unknown.qcow2", "foo:bar", "raw"},
	} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", b.backing, "-F", b.fmt,
			filepath.Join(dir, b.img), "1M")
	}
	for _, cwd := range []string{dir, other} {
		t.Chdir(cwd)
		rel, err := filepath.Rel(cwd, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range []string{"file.qcow2", "unknown.qcow2"} {
			p := filepath.Join(rel, img)
			for _, args := range [][]string{
				{"info", "--backing-chain", p},
				{"convert", "-O", "raw", p, filepath.Join(dir, "out-"+img+".raw")},
			} {
				out, errOut, code := runQ(t, args...)
				qa := slices.Clone(args)
				if qa[0] == "convert" {
					qa[len(qa)-1] = filepath.Join(dir, "qout-"+img+".raw")
				}
				qout, qerr, qcode := testkit.Run(t, "qemu-img", qa...)
				ours := strings.TrimPrefix(strings.TrimSpace(errOut), "qimg: "+args[0]+": ")
				theirs := strings.TrimPrefix(strings.TrimSpace(qerr), "qemu-img: ")
				if code != qcode || out != qout || ours != theirs {
					t.Errorf("in %s, %q: exit %d, stdout:\n%s\nstderr: %s\nqemu-img: exit %d, stdout:\n%s\nstderr: %s",
						cwd, args, code, out, ours, qcode, qout, theirs)
				}
				if args[0] == "convert" && code == 0 {
					a, _ := os.ReadFile(filepath.Join(dir, "out-"+img+".raw"))
					b, _ := os.ReadFile(filepath.Join(dir, "qout-"+img+".raw"))
					if !bytes.Equal(a, b) {
						t.Errorf("in %s, convert %s: the raw images differ", cwd, img)
					}
				}
			}
		}
	}
	t.Chdir(dir)
	testkit.MustRun(t, "qemu-img", "check", "-q", "file.qcow2")
	mustQ(t, "check", "-q", "file.qcow2")
}
