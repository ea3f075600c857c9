package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
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

// TestSpec_RepairRefusedLikeQemu: an image spec's repair=on is refused
// as QEMU's qcow2 driver refuses the option, also on an image marked
// corrupt, which it opened writable (qimg io wrote into it).
func TestSpec_RepairRefusedLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	clean, corrupt := filepath.Join(d, "clean.qcow2"), filepath.Join(d, "corrupt.qcow2")
	for _, p := range []string{clean, corrupt} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	}
	b, err := os.ReadFile(corrupt)
	if err != nil {
		t.Fatal(err)
	}
	b[79] |= 2 // incompatible_features bit 1: corrupt
	if err := os.WriteFile(corrupt, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{clean, corrupt} {
		spec := "driver=qcow2,file.filename=" + p + ",repair=on"
		_, e, code := runQ(t, "io", "--image-opts", "-c", "write 0 512", spec)
		qo, qe, qcode := testkit.Run(t, "qemu-io", "--image-opts", "-c", "write 0 512", spec)
		if code != qcode || strings.Replace(e, "qimg: io: ", "qemu-io: ", 1) != qe+qo {
			t.Errorf("%s: exit %d, %q; qemu-io: exit %d, %q", filepath.Base(p), code, e, qcode, qe+qo)
		}
	}
	after, _ := os.ReadFile(corrupt)
	if !bytes.Equal(b, after) {
		t.Error("the image marked corrupt changed")
	}
}

// TestSpec_ReadOnlyFileNodeLikeQemu: a writable qcow2 node over a file
// node that says read-only=on is refused at the open, in QEMU's words;
// read-only, it opens. qimg opened it and failed at the first write.
func TestSpec_ReadOnlyFileNodeLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	spec := "driver=qcow2,file.driver=file,file.filename=" + p + ",file.read-only=on"
	for _, args := range [][]string{{"-c", "write 0 512"}, {"-r", "-c", "read 0 512"}} {
		a := append(append([]string{}, args...), "--image-opts", spec)
		o, e, code := runQ(t, append([]string{"io"}, a...)...)
		qo, qe, qcode := testkit.Run(t, "qemu-io", a...)
		if code != qcode || strings.Replace(e, "qimg: io: ", "qemu-io: ", 1) != qe || (code == 0) != strings.Contains(o, "read 512/512") {
			t.Errorf("io %q: exit %d, %q %q; qemu-io: exit %d, %q %q", args, code, e, o, qcode, qe, qo)
		}
	}
	testkit.MustRun(t, "qemu-img", "check", p)
}
