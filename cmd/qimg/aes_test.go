package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

const aesSecret = "secret,id=s,data=password"

func aesSpec(p string) string { return "driver=qcow2,encrypt.key-secret=s,file.filename=" + p }

// QEMU's legacy AES encryption (crypt_method 1, qemu-img create -o
// encrypt.format=aes or encryption=on): qimg refused such images, even
// for info. Now each tool reads what the other wrote (IV = the guest
// sector), info and create say what qemu-img says, and qemu-img check
// passes qimg's writes.
func TestLegacyAES_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // checked here with the key (workDir's checks have none)
	q := filepath.Join(d, "q.qcow2")
	o := filepath.Join(d, "o.qcow2")
	// With an external data file too (refused before): its clusters sit
	// at their guest offsets, so the IVs are the data file's sectors.
	qd, od := filepath.Join(d, "qd.qcow2"), filepath.Join(d, "od.qcow2")
	for _, c := range []struct{ path, opts string }{
		{q, "encrypt.format=aes,encrypt.key-secret=s"},
		{o, "encryption=on,encrypt.key-secret=s,compat=0.10"},
		{qd, "encrypt.format=aes,encrypt.key-secret=s,data_file=" + filepath.Join(d, "qd.raw")},
		{od, "encrypt.format=aes,encrypt.key-secret=s,data_file=" + filepath.Join(d, "od.raw")},
	} {
		args := []string{"create", "-f", "qcow2", "--object", aesSecret, "-o", c.opts, c.path, "4M"}
		if c.path == q || c.path == qd {
			testkit.MustRun(t, "qemu-img", args...)
			continue
		}
		out := mustQ(t, args...)
		base := strings.TrimSuffix(filepath.Base(c.path), ".qcow2")
		args[len(args)-2] = filepath.Join(d, "x.qcow2")
		args[len(args)-3] = strings.ReplaceAll(c.opts, base+".raw", "x.raw")
		want := strings.NewReplacer("x.qcow2", base+".qcow2", "x.raw", base+".raw").Replace(testkit.MustRun(t, "qemu-img", args...))
		if want != out {
			t.Errorf("create: qimg said\n%sqemu-img\n%s", out, want)
		}
	}
	for _, p := range []string{q, o, qd, od} {
		for _, f := range []string{"human", "json"} {
			if ours, theirs := qimgAndQemu(t, "info", "--output="+f, p); ours != theirs {
				t.Errorf("info --output=%s:\nqimg: %sqemu: %s", f, ours, theirs)
			}
		}
		// With the key: QEMU names the image by the JSON of its strong
		// options (encrypt.key-secret), the others left out.
		for _, spec := range []string{aesSpec(p), aesSpec(p) + ",file.locking=off,l2-cache-size=1M,cache.no-flush=on"} {
			if ours, theirs := qimgAndQemu(t, "info", "--output=json", "--object", aesSecret, "--image-opts", spec); ours != theirs {
				t.Errorf("info --image-opts %s:\nqimg: %sqemu: %s", spec, ours, theirs)
			}
		}
		// Unaligned writes by each, read back by the other.
		testkit.MustRun(t, "qemu-io", "--object", aesSecret, "--image-opts", aesSpec(p), "-c", "write -P 0x5a 1000 70000", "-c", "write -P 0x11 3M 4096")
		mustQ(t, "io", "--object", aesSecret, "--image-opts", aesSpec(p), "-c", "read -P 0x5a 1000 70000", "-c", "read -P 0x11 3M 4096",
			"-c", "write -P 0xc3 65000 2000", "-c", "write -P 0x77 2M 300000")
		testkit.MustRun(t, "qemu-io", "--object", aesSecret, "--image-opts", aesSpec(p), "-c", "read -P 0x5a 1000 64000",
			"-c", "read -P 0xc3 65000 2000", "-c", "read -P 0x5a 67000 4000", "-c", "read -P 0x77 2M 300000", "-c", "read -P 0 0 1000")
		testkit.MustRun(t, "qemu-img", "check", "-q", "--object", aesSecret, "--image-opts", aesSpec(p))
	}
	for _, p := range []string{o, qd, od} {
		testkit.MustRun(t, "qemu-img", "compare", "--object", aesSecret, "--image-opts", aesSpec(q), aesSpec(p))
	}
	// Without the key: info only, as qemu-img.
	_, oerr, ocode := runQ(t, "check", q)
	_, qerr, qcode := testkit.Run(t, "qemu-img", "check", q)
	if strings.Replace(oerr, "qimg: check: ", "qemu-img: ", 1) != qerr || ocode != qcode {
		t.Errorf("check without a key: qimg (exit %d) %sqemu-img (exit %d) %s", ocode, oerr, qcode, qerr)
	}
	// encrypt.format in the open options must be the header's.
	plain := filepath.Join(d, "p.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", plain, "1M")
	for _, spec := range []string{"driver=qcow2,encrypt.format=luks,encrypt.key-secret=s,file.filename=" + q,
		"driver=qcow2,encrypt.format=aes,file.filename=" + plain, "driver=qcow2,encrypt.format=aes,file.filename=" + q} {
		oout, oerr, ocode := runQ(t, "info", "--image-opts", spec)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", "info", "--image-opts", spec)
		if oout != qout || strings.Replace(oerr, "qimg: info: ", "qemu-img: ", 1) != qerr || ocode != qcode {
			t.Errorf("info %s:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s", spec, ocode, oout, oerr, qcode, qout, qerr)
		}
	}
	// measure adds no header area for it, and needs no key.
	for _, o := range []string{"encrypt.format=aes", "encryption=on"} {
		if ours, theirs := qimgAndQemu(t, "measure", "-O", "qcow2", "-o", o, "--size", "1M"); ours != theirs {
			t.Errorf("measure -o %s:\nqimg: %sqemu: %s", o, ours, theirs)
		}
	}
	// amend of encrypt.* options: LUKS only, as QEMU says.
	_, oerr, _ = runQ(t, "amend", "--object", aesSecret, "--object", "secret,id=n,data=new", "-o", "encrypt.state=active,encrypt.new-secret=n", "--image-opts", aesSpec(q))
	_, qerr, _ = testkit.Run(t, "qemu-img", "amend", "--object", aesSecret, "--object", "secret,id=n,data=new", "-o", "encrypt.state=active,encrypt.new-secret=n", "--image-opts", aesSpec(q))
	if strings.Replace(oerr, "qimg: amend: ", "qemu-img: ", 1) != qerr {
		t.Errorf("amend encrypt.*: qimg %q, qemu-img %q", oerr, qerr)
	}
	// A downgrade that would turn a snapshot's zero clusters over the
	// backing file into plain zeros (garbage through the cipher; QEMU
	// 7.2 does it) is refused, the image unchanged.
	base := filepath.Join(d, "base.raw")
	ov := filepath.Join(d, "ov.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", base, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", aesSecret, "-o", "encrypt.format=aes,encrypt.key-secret=s", "-b", base, "-F", "raw", ov)
	testkit.MustRun(t, "qemu-io", "--object", aesSecret, "--image-opts", aesSpec(ov), "-c", "write -z 0 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", "--object", aesSecret, "--image-opts", aesSpec(ov))
	if _, errOut, code := runQ(t, "amend", "--object", aesSecret, "-o", "compat=0.10", "--image-opts", aesSpec(ov)); code == 0 || !strings.Contains(errOut, "would read as garbage") {
		t.Errorf("downgrade with snapshot zero clusters: exit %d, %s", code, errOut)
	}
	if out := testkit.MustRun(t, "qemu-img", "info", ov); !strings.Contains(out, "compat: 1.1") {
		t.Errorf("the refused downgrade changed the image:\n%s", out)
	}
	// What QEMU refuses, in its words.
	for _, opts := range []string{"encrypt.format=aes,encrypt.key-secret=s,encrypt.cipher-alg=aes-128", "encryption=on",
		"encryption=on,encrypt.format=luks,encrypt.key-secret=s",
		// encryption's other spellings of a boolean are format names to
		// QEMU; off is dropped, the last value counts; the alias is
		// refused before any value is checked.
		"encryption=yes", "encryption=no,encrypt.key-secret=s", "encryption=yes,cluster_size=1k,preallocation=foo",
		"encryption=on,encrypt.format=luks,preallocation=foo", "encryption=on,encryption=off", "encrypt.key-secret=s"} {
		n := filepath.Join(d, "n.qcow2")
		args := []string{"create", "-f", "qcow2", "--object", aesSecret, "-o", opts, n, "1M"}
		oout, oerr, ocode := runQ(t, args...)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		if oout != qout || strings.Replace(oerr, "qimg: create: ", "qemu-img: ", 1) != qerr || ocode != qcode {
			t.Errorf("-o %s:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s", opts, ocode, oout, oerr, qcode, qout, qerr)
		}
	}
}
