package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// usageSuffix is what qimg adds to a command-line error.
var usageSuffix = regexp.MustCompile(` \(usage: [^\n]*\)$`)

// TestObjectErrors_LikeQemu: a faulty --object is refused in qemu-img's
// words (the object parser's and QEMU's secret object's: "Parameter 'id'
// is missing", "Either 'file' or 'data' must be provided", "Parameter
// 'foo' is unexpected", "Unable to read F: Failed to open file ...", a
// type QEMU does not know, a duplicate id...), with qimg's usage line
// after it; of a property given twice the last counts, as QEMU's. qimg
// said "secret: invalid: secret "s": ..." in its own words, and refused
// a property given twice.
func TestObjectErrors_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	img := filepath.Join(d, "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	for _, objs := range [][]string{
		{"bogus,id=x"}, {"secret"}, {"secret,data=x"}, {"secret,id=s"}, {"secret,id=s,data=x,file=/etc/hostname"},
		{"secret,id=s,data=x,foo=1"}, {"secret,id=s,data=!!!,format=base64"}, {"secret,id=s,data=x,format=hex"},
		{"secret,id=s,file=" + filepath.Join(d, "nosuch")}, {"secret,id=s,file=" + d}, {"secret,id=s,data"},
		{"secret,id=1s,data=x"}, {"iothread,id=i"}, {"secret,id=s,data=x", "secret,id=s,data=y"}, {"id=s,data=x"},
		{`{"qom-type":"secret","id":"s","data":1}`}, {`{"qom-type":"secret"`}, {"secret,id=s,data=x,data=y"},
		{"secret,id=s,data=x,format=base64"}, {`{"qom-type":"secret","id":"s","data":"x"}`},
	} {
		args := append(flagArgs("--object", objs), img)
		_, e, code := runQ(t, append([]string{"info"}, args...)...)
		_, qe, qcode := testkit.Run(t, "qemu-img", append([]string{"info"}, args...)...)
		ours := strings.ReplaceAll(usageSuffix.ReplaceAllString(strings.TrimSuffix(e, "\n"), ""), "; ", "\n")
		if e != "" {
			ours = strings.Replace(ours, "qimg: info: ", "qemu-img: ", 1) + "\n"
		}
		if code != qcode || ours != qe {
			t.Errorf("--object %q: qimg exit %d: %s\nqemu-img exit %d: %s", objs, code, e, qcode, qe)
		}
	}
}

// TestSecretKeys_LikeQemu: a base64 secret decodes as QEMU's (GLib's
// lenient decoder: an incomplete last group is dropped, '=' ends a
// group early, a newline is skipped; Go's strict decoder refused what
// QEMU takes), so the same data= opens the same LUKS image or neither
// does; a wrong passphrase is QEMU's "Invalid password, cannot unlock
// any keyslot"; and info, which reads no data, opens the image whatever
// the secret says, even one that does not exist, as qemu-img's
// (BDRV_O_NO_IO), where qimg tried the passphrase.
func TestSecretKeys_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := testkit.Dir(t) // checked below with its secret
	img := filepath.Join(d, "e.qcow2")
	defer testkit.QemuCheckSecret(t, img, "xyz")
	mustQ(t, "create", "-q", "-f", "qcow2", "--object", "secret,id=s,data=xyz",
		"-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10", img, "1M")
	spec := "driver=qcow2,encrypt.key-secret=s,file.filename=" + img
	for _, data := range []string{"eHl6", "eHl6eA", "eHl6e", "eHl=", "eHl=eHl6", "eH=6", "eHl6=", "eHl6\neA==", "eHl6 ", "x"} {
		args := []string{"--object", "secret,id=s,format=base64,data=" + data, "-c", "read 0 512", "--image-opts", spec}
		_, e, code := runQ(t, append([]string{"io"}, args...)...)
		_, qe, qcode := testkit.Run(t, "qemu-io", args...)
		if code != qcode {
			t.Errorf("data=%q: qimg exit %d %s\nqemu-io exit %d %s", data, code, e, qcode, qe)
		}
		if code != 0 {
			msg := func(s string) string {
				s = strings.TrimSpace(s)
				if i := strings.LastIndex(s, ": "); i >= 0 {
					return s[i+2:]
				}
				return s
			}
			if msg(e) != msg(qe) {
				t.Errorf("data=%q: qimg %q, qemu-io %q", data, e, qe)
			}
		}
	}
	for _, obj := range []string{"secret,id=s,data=bad", "secret,id=other,data=xyz"} {
		args := []string{"info", "--object", obj, "--image-opts", spec}
		o, e, code := runQ(t, args...)
		if qo, qe, qcode := testkit.Run(t, "qemu-img", args...); code != 0 || qcode != 0 {
			t.Errorf("info --object %s: qimg exit %d %s%s\nqemu-img exit %d %s%s", obj, code, o, e, qcode, qo, qe)
		}
	}
}
