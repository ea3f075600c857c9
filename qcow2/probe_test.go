package qcow2

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// otherFormats are the formats qemu-img creates that QEMU probes by
// content, with their create options.
var otherFormats = map[string][]string{
	"qcow": nil, "qed": nil, "vmdk": nil, "vpc": nil, "vhdx": nil, "vdi": nil, "parallels": nil,
	"luks": {"--object", "secret,id=s,data=x", "-o", "key-secret=s,iter-time=10"},
}

// mkOther creates a 1 MiB image of format f with qemu-img; false when
// this qemu-img cannot.
func mkOther(t *testing.T, dir, f string) (string, bool) {
	t.Helper()
	p := filepath.Join(dir, "x."+f)
	args := append(append([]string{"create", "-q", "-f", f}, otherFormats[f]...), p, "1M")
	if o, e, code := testkit.Run(t, "qemu-img", args...); code != 0 {
		t.Logf("qemu-img cannot create %s here: %s%s", f, o, e)
		return "", false
	}
	return p, true
}

// TestProbe_QemuImgFormats: every format qemu-img creates probes as
// that format (as qemu-img info names it); opening such a file without
// a format is a FormatError (it is not read as raw, as it was), and
// with format raw it is its bytes.
func TestProbe_QemuImgFormats(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	for f := range otherFormats {
		p, ok := mkOther(t, dir, f)
		if !ok {
			continue
		}
		if got, err := Probe(p); err != nil || got != f {
			t.Errorf("Probe(%s) = %q, %v", f, got, err)
		}
		if info := testkit.MustRun(t, "qemu-img", "info", "-U", p); !strings.Contains(info, "file format: "+f+"\n") {
			t.Errorf("qemu-img info %s:\n%s", f, info)
		}
		d, err := OpenFormat(p, "", Options{ReadOnly: true})
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Format != f || !fe.Probed || !errors.Is(err, ErrUnsupported) {
			t.Errorf("OpenFormat(%s, probe): %v (%T)", f, err, err)
		}
		if err == nil {
			d.Close()
		}
		d, err = OpenFormat(p, "raw", Options{ReadOnly: true})
		if err != nil {
			t.Errorf("OpenFormat(%s, raw): %v", f, err)
			continue
		}
		want, _ := os.ReadFile(p)
		testkit.MustEqual(t, testkit.ReadAll(t, d)[:len(want)], want, f+" read as raw")
		d.Close()
	}
	if got, err := Probe(mkEmpty(t, dir, "e.dmg")); got != "raw" || err != nil {
		t.Errorf("an empty file: %q, %v", got, err)
	}
}

func mkEmpty(t *testing.T, dir, name string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBacking_ProbedOtherFormat: a qcow2 image whose backing file is a
// VMDK image named without a backing format is refused at open (QEMU
// probes the backing file and reads it as VMDK; reading its bytes as a
// raw backing file would show the guest the VMDK header). With backing
// format raw it opens, and the guest sees those bytes, as in QEMU.
func TestBacking_ProbedOtherFormat(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	vmdk, ok := mkOther(t, dir, "vmdk")
	if !ok {
		t.Skip("no vmdk")
	}
	top := filepath.Join(dir, "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", filepath.Base(vmdk), "-F", "vmdk", top, "1M")
	testkit.DropBackingFormat(t, top)
	if info := testkit.MustRun(t, "qemu-img", "info", top); strings.Contains(info, "backing file format") {
		t.Fatalf("backing format still there:\n%s", info)
	}
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0 0 64k", top) // qemu: a VMDK disk of zeros

	_, err := Open(top, Options{ReadOnly: true})
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Format != "vmdk" || !fe.Probed {
		t.Fatalf("Open with a VMDK backing file: %v", err)
	}
	if !strings.Contains(err.Error(), `"vmdk" (probed) is not supported`) {
		t.Errorf("message: %v", err)
	}

	testkit.MustRun(t, "qemu-img", "rebase", "-u", "-b", filepath.Base(vmdk), "-F", "raw", top)
	im := openReadOnly(t, top)
	got := make([]byte, 4)
	if _, err := im.ReadAt(got, 0); err != nil || string(got) != "KDMV" {
		t.Fatalf("backing format raw: read %q, %v", got, err)
	}
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0x4b 0 1", top)
}
