package main

import (
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestAmend_ProgressLikeQemu: amend -p prints qemu-img's 0 % and 100 %
// wherever qemu-img does: once the image is open and the option parser
// has taken the options, also when the driver then refuses a value or
// when the image is a LUKS volume (qimg printed them only when every
// option was good, and not for LUKS); an open that fails, an unknown
// option or a value not of its type prints none, and the open's error
// comes before the options' (qimg named the option of an image that
// does not exist).
func TestAmend_ProgressLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	t.Chdir(d)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "p.qcow2", "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=s0,data=abc", "-o", "key-secret=s0", "-o", "iter-time=10", "l.luks", "1M")
	luks := []string{"--object", "secret,id=s0,data=abc", "--image-opts"}
	const spec = "driver=luks,key-secret=s0,file.filename=l.luks"
	for _, args := range [][]string{
		{"-o", "compat=1.2", "p.qcow2"},
		{"-o", "lazy_refcounts=on", "p.qcow2"},
		{"-o", "refcount_bits=3", "p.qcow2"},
		{"-o", "refcount_bits=x", "p.qcow2"},
		{"-o", "size=1000", "p.qcow2"},
		{"-o", "encrypt.keyslot=x", "p.qcow2"},
		{"-o", "encrypt.state=active", "p.qcow2"},
		{"-o", "lazy_refcounts=on", "nonexist.qcow2"},
		{"-o", "bogus=1", "nonexist.qcow2"},
		{"-o", "compat=1.2", "nonexist.qcow2"},
		append(luks, "-o", "state=inactive,keyslot=1", spec),
		append(luks, "-o", "bogus=1", spec),
		append(luks, "-o", "size=2M", spec),
		append(luks, "-o", "iter-time=10", spec),
		append(luks, "-o", "keyslot=x", spec),
		append(luks, "-o", "state=bogus", spec),
		append(luks, "-o", "new-secret=nope,keyslot=x", spec),
		append(luks, "-o", "new-secret=nope,state=active", spec),
	} {
		a := append([]string{"amend", "-p"}, args...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", a...)
		oo, oe, code := runQ(t, a...)
		oe = strings.ReplaceAll(strings.Replace(oe, "qimg: amend: ", "qemu-img: ", 1), "; ", "\n")
		if oo != qo || oe != qe || code != qcode {
			t.Errorf("%q: qimg exit %d\n%q\n%q\nqemu-img exit %d\n%q\n%q", args, code, oo, oe, qcode, qo, qe)
		}
	}
	// A LUKS amendment that succeeds: 0 % and 100 % as qemu-img.
	erase := append(append([]string{"amend", "-p"}, luks...), "-o", "state=inactive,keyslot=1", spec)
	restore := append(append([]string{"amend"}, luks...), "-o", "state=active,keyslot=1,new-secret=s0,iter-time=10", spec)
	testkit.MustRun(t, "qemu-img", restore...)
	qo, _, qcode := testkit.Run(t, "qemu-img", erase...)
	testkit.MustRun(t, "qemu-img", restore...)
	oo, _, code := runQ(t, erase...)
	if code != 0 || qcode != 0 || oo != qo || !strings.Contains(oo, "(100.00/100%)") {
		t.Errorf("a LUKS amendment: qimg exit %d %q, qemu-img exit %d %q", code, oo, qcode, qo)
	}
}
