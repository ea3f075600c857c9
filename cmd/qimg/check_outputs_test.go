package main

import (
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheckCompare_OutputsLikeQemu: what check and compare print and
// exit with, as qemu-img 7.2: check -q prints no report, JSON neither
// (qimg printed the JSON); check's JSON names the image as given, an
// --image-opts spec too (qimg named its file); compare fails a spec it
// cannot take as an open failure, exit 2 (qimg: a usage error, 1); the
// wording of a missing name and of a bad --output.
func TestCheckCompare_OutputsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	t.Chdir(d)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "a.vmdk", "1M")
	for _, args := range [][]string{
		{"check", "-q", "--output=json", "a.qcow2"},
		{"check", "-q", "--output=json", "a.vmdk"},
		{"check", "-q", "a.qcow2"},
		{"check", "--output=json", "--image-opts", "driver=qcow2,file.filename=a.qcow2"},
		{"check", "--output=json", "--image-opts", "driver=vmdk,file.filename=a.vmdk"},
		{"compare", "--image-opts", "driver=qcow2,file.filename=a.qcow2,bogus=1", "driver=qcow2,file.filename=a.qcow2"},
		{"compare", "a.qcow2"},
		{"info", "--output=xml", "a.qcow2"},
	} {
		qo, qe, qcode := testkit.Run(t, "qemu-img", args...)
		oo, oe, code := runQ(t, args...)
		qe = strings.SplitN(qe, "\n", 2)[0] // without "Try 'qemu-img --help'"
		oe = strings.SplitN(oe, " (usage: ", 2)[0]
		oe = strings.Replace(strings.TrimSuffix(oe, "\n"), "qimg: "+args[0]+": ", "qemu-img: ", 1)
		if oo != qo || code != qcode || !strings.HasPrefix(oe, qe) {
			t.Errorf("%q: qimg exit %d\n%q\n%q\nqemu-img exit %d\n%q\n%q", args, code, oo, oe, qcode, qo, qe)
		}
	}
}
