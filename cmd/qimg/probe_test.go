package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// probedFormats are formats qemu-img creates and QEMU probes by content,
// and qimg does not open (vpc and vmdk, which it reads, are vpc_test.go's and vmdk_test.go's).
var probedFormats = []string{"vdi", "vhdx", "qed", "qcow", "parallels"}

// TestProbe_OtherFormatsRefused: an image of a format other than qcow2
// and raw, given without -f, is refused by info, check and convert
// (qemu-img opens it as its format; qimg read its bytes as a raw image);
// with -f raw it is a raw image, as with qemu-img -f raw.
func TestProbe_OtherFormatsRefused(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // not workDir: a qcow (version 1) image is no qcow2 for checkAll
	for _, f := range probedFormats {
		p := filepath.Join(d, "x."+f)
		if o, e, code := testkit.Run(t, "qemu-img", "create", "-q", "-f", f, p, "1M"); code != 0 {
			t.Logf("qemu-img cannot create %s here: %s%s", f, o, e)
			continue
		}
		want := `image format "` + f + `" (probed) is not supported`
		out := filepath.Join(d, f+".out")
		if info := testkit.MustRun(t, "qemu-img", "info", p); !strings.Contains(info, "file format: "+f+"\n") {
			t.Errorf("qemu-img info %s:\n%s", f, info)
		}
		for _, args := range [][]string{{"info", p}, {"check", p}, {"convert", "-O", "raw", p, out}, {"map", p}, {"compare", p, p}} {
			if o, e, code := runQ(t, args...); code == 0 || !strings.Contains(e, want) || !strings.Contains(e, "-f raw") {
				t.Errorf("qimg %q: exit %d\n%s%s", args, code, o, e)
			}
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: convert created its target", f)
		}
		// As a backing file without -F: qemu-img's refusal, which names
		// the format it detected.
		_, qe, _ := testkit.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", p, out, "1M")
		detected := "Detected format of " + f + "."
		if !strings.Contains(qe, detected) {
			t.Fatalf("qemu-img create -b %s:\n%s", f, qe)
		}
		if _, e, code := runQ(t, "create", "-f", "qcow2", "-b", p, out, "1M"); code != 1 ||
			!strings.Contains(e, "Backing file specified without backing format") || !strings.Contains(e, detected) {
			t.Errorf("create -b %s without -F: exit %d\n%s\nqemu-img:\n%s", f, code, e, qe)
		}
		// -f raw: the file's bytes, as qemu-img -f raw reads them.
		if got, want := mustQ(t, "info", "-f", "raw", p), testkit.MustRun(t, "qemu-img", "info", "-f", "raw", p); got != want {
			t.Errorf("info -f raw %s:\n%s\nqemu-img:\n%s", f, got, want)
		}
		_, _, qcode := testkit.Run(t, "qemu-img", "check", "-f", "raw", p)
		if _, e, code := runQ(t, "check", "-f", "raw", p); code != qcode {
			t.Errorf("check -f raw %s: exit %d, qemu-img %d\n%s", f, code, qcode, e)
		}
		mustQ(t, "convert", "-f", "raw", "-O", "raw", p, out)
		testkit.MustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", p, out+".qemu")
		a, _ := os.ReadFile(out)
		b, _ := os.ReadFile(out + ".qemu")
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("convert -f raw %s: %d bytes, qemu-img's %d, equal %v", f, len(a), len(b), bytes.Equal(a, b))
		}
	}
}
