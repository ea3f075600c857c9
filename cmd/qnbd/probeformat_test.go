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

// TestProbe_OtherFormatsRefused: an image of a format other than qcow2,
// raw, vpc and vmdk (which qnbd serves read-only: vpc_test.go, vmdk_test.go), without -f (or a bare file in a spec, whose format is probed
// too), is refused at start: qemu-nbd would serve it as its format, and
// qnbd served its bytes as a raw image. With -f raw it serves its bytes.
func TestProbe_OtherFormatsRefused(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := shortDir(t)
	sock := filepath.Join(dir, "s.sock")
	for _, f := range []string{"vdi", "vhdx", "qed", "qcow", "parallels"} {
		p := filepath.Join(dir, "x."+f)
		if o, e, code := testkit.Run(t, "qemu-img", "create", "-q", "-f", f, p, "1M"); code != 0 {
			t.Logf("qemu-img cannot create %s here: %s%s", f, o, e)
			continue
		}
		want := `image format "` + f + `" (probed) is not supported`
		for _, args := range [][]string{{p}, {"-r", p}, {"--image-opts", "driver=quorum,vote-threshold=1,children=" + p}} {
			cmd := exec.Command(filepath.Join(bin, "qnbd"), append([]string{"-k", sock}, args...)...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if code, err := launch(t, sock, cmd); code <= 0 || !strings.Contains(out.String(), want) {
				t.Errorf("qnbd %q: exit %d (-1: serves), %v\n%s", args, code, err, out.String())
			}
		}
		s := startUnix(t, dir, "x", "-r", "-f", "raw", p)
		got := filepath.Join(dir, f+".out")
		sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri, got)
		s.stop()
		a, _ := os.ReadFile(got)
		b, _ := os.ReadFile(p)
		b = append(b, make([]byte, -len(b)&511)...)
		if !bytes.Equal(a, b) {
			t.Errorf("%s served with -f raw: %d bytes, not the file's %d", f, len(a), len(b))
		}
	}
}
