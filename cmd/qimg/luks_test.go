package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// luksSecret is the --object both tools take in the LUKS tests.
const luksSecret = "secret,id=s,data=pw"

// luksSpec is the --image-opts argument that opens the volume at p with
// the key.
func luksSpec(p string) string { return "driver=luks,key-secret=s,file.filename=" + p }

// qemuLUKS creates a LUKS volume with qemu-img (QEMU's PBKDF2 benchmark
// is retried by testkit.Run).
func qemuLUKS(t *testing.T, p, opts, size string) {
	t.Helper()
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "luks", "--object", luksSecret, "-o", "key-secret=s,iter-time=20"+opts, p, size)
}

// ioTimes hides qemu-io's timings.
var ioTimes = regexp.MustCompile(`(?m)^.* ops; .*$`)

// luksVolatile hides what differs between two volumes made alike (their
// UUIDs and measured PBKDF2 iterations) and between the tools' outputs
// for one (the disk size of a file just written).
var luksVolatile = regexp.MustCompile(`(?m)(uuid|iters|"uuid"|"iters"|"master-key-iters"|master key iters|"actual-size"|disk size):? [^,\n]*`)

// TestLUKS_OpenLikeQemu: a volume qemu-img made is read and written by
// qimg as qemu-io reads and writes it, and info, map, check and compare
// say what qemu-img says of it.
func TestLUKS_OpenLikeQemu(t *testing.T) {
	d := qemuDir(t)
	p := filepath.Join(d, "a.luks")
	qemuLUKS(t, p, "", "4M")
	spec := luksSpec(p)
	// Unaligned writes both ways, each read back by the other tool.
	mustQ(t, "io", "--object", luksSecret, "--image-opts", spec, "-c", "write -P 7 1000 5000", "-c", "write -P 8 3M 1M", "-c", "write -z 2M 700")
	testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", spec,
		"-c", "read -P 7 1000 5000", "-c", "read -P 8 3M 1M", "-c", "read -P 0 2M 700")
	testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", spec, "-c", "write -P 9 6000 100")
	mustQ(t, "io", "--object", luksSecret, "--image-opts", spec, "-c", "read -P 7 1000 5000", "-c", "read -P 9 6000 100")
	// qemu-io's info, and its discard, which changes nothing.
	ours := mustQ(t, "io", "--object", luksSecret, "--image-opts", spec, "-c", "info", "-c", "discard 0 64k", "-c", "read -P 7 1000 5000")
	qemu := testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", spec, "-c", "info", "-c", "discard 0 64k", "-c", "read -P 7 1000 5000")
	if ioTimes.ReplaceAllString(ours, "") != ioTimes.ReplaceAllString(qemu, "") {
		t.Errorf("info, discard:\n%s\nqemu-io:\n%s", ours, qemu)
	}
	// Both read the same bytes everywhere, the noise of unwritten
	// sectors (their file's zeros decrypted) too.
	raw := filepath.Join(d, "plain.img")
	mustQ(t, "convert", "-O", "raw", "--object", luksSecret, "--image-opts", spec, raw)
	testkit.MustRun(t, "qemu-img", "compare", "--object", luksSecret, "--image-opts", spec, "driver=raw,file.filename="+raw)

	// Commands that open it without the key, or with a wrong one.
	wrong := "secret,id=s,data=nope"
	for _, args := range [][]string{
		{"info", p},
		{"info", "--output=json", p},
		{"info", "-f", "luks", p},
		{"info", "--object", luksSecret, "--image-opts", "driver=luks,file.filename=" + p},
		// Named by QEMU's json: of the key-secret (a strong option).
		{"info", "--object", luksSecret, "--image-opts", spec},
		{"info", "--output=json", "--object", luksSecret, "--image-opts", "driver=raw,size=1M,file.driver=luks,file.key-secret=s,file.file.filename=" + p},
		{"map", "--output=json", "--object", luksSecret, "--image-opts", "driver=raw,size=1M,file.driver=luks,file.key-secret=s,file.file.filename=" + p},
		{"map", "--output=json", "--object", luksSecret, "--image-opts", spec},
		{"map", "--object", luksSecret, "--image-opts", spec},
		{"map", p},
		{"check", p},
		{"check", "--object", luksSecret, "--image-opts", spec},
		{"compare", p, raw},
		{"compare", "--object", wrong, "--image-opts", spec, "driver=raw,file.filename=" + raw},
		{"compare", "--object", "secret,id=t,data=pw", "--image-opts", spec, "driver=raw,file.filename=" + raw},
		{"info", "-f", "luks", raw},
		{"snapshot", "-c", "x", "--object", luksSecret, "--image-opts", spec},
	} {
		ours, oerr, ocode := runQ(t, args...)
		qemu, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		qerr = strings.ReplaceAll(qerr, "qemu-img: ", "")
		oerr = strings.TrimPrefix(strings.TrimSpace(oerr), "qimg: "+args[0]+": ")
		ours = strings.ReplaceAll(ours, `, "compressed": false`, "") // qimg's 8.2 layout
		if ours != qemu || oerr != strings.TrimSpace(qerr) || ocode != qcode {
			t.Errorf("%q:\nqimg (exit %d):\n%s%s\nqemu-img (exit %d):\n%s%s", args, ocode, ours, oerr, qcode, qemu, qerr)
		}
	}
	// A qcow2 overlay whose json: backing file is the volume with its
	// key-secret (the --object reaches it): reads through, and copies on
	// write, as QEMU's; the map shows the volume's data at no offset.
	od := t.TempDir() // not workDir's: its qemu-img check has no secret
	ov := filepath.Join(od, "ov.qcow2")
	backing := `json:{"driver":"luks","key-secret":"s","file":{"driver":"file","filename":"` + p + `"}}`
	// qimg creates it as qemu-img does (the size from the volume, opened
	// without its key; the name's commas doubled in the Formatting line).
	ovq := filepath.Join(od, "ovq.qcow2")
	ours = mustQ(t, "create", "-f", "qcow2", "-b", backing, "-F", "luks", ov)
	qemu = testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-b", backing, "-F", "luks", ovq)
	if strings.ReplaceAll(ours, ov, "F") != strings.ReplaceAll(qemu, ovq, "F") {
		t.Errorf("create over a json: luks backing file:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	// rebase -u onto it, as qemu-img writes it.
	rb := filepath.Join(od, "rb.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", rb, "4M")
	mustQ(t, "rebase", "--object", luksSecret, "-u", "-b", backing, "-F", "luks", rb)
	if a, b := testkit.MustRun(t, "qemu-img", "info", "--output=json", rb), testkit.MustRun(t, "qemu-img", "info", "--output=json", ovq); !strings.Contains(a, `"backing-filename-format": "luks"`) ||
		!strings.Contains(a, strings.ReplaceAll(backing, `"`, `\"`)) || !strings.Contains(b, `"backing-filename-format": "luks"`) {
		t.Errorf("rebase onto the volume:\n%s", a)
	}
	mustQ(t, "io", "--object", luksSecret, "-c", "write -P 0x33 3000 100", ov)
	testkit.MustRun(t, "qemu-io", "--object", luksSecret, "-c", "read -P 0x33 3000 100", "-c", "read -P 7 1000 2000", "-c", "read -P 7 3100 2900", ov)
	for _, args := range [][]string{{"map", "--output=json", "--object", luksSecret, ov}, {"check", "--object", luksSecret, ov}} {
		ours := strings.ReplaceAll(mustQ(t, args...), `, "compressed": false`, "")
		if qemu := testkit.MustRun(t, "qemu-img", args...); ours != qemu {
			t.Errorf("%q:\n%s\nqemu-img:\n%s", args, ours, qemu)
		}
	}
	// A plain name as the backing file: no key-secret to open it with
	// (QEMU's words), though info describes the chain.
	pl := filepath.Join(od, "pl.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", "-b", p, "-F", "luks", pl)
	if _, e, _ := runQ(t, "io", "-c", "read 0 1", pl); !strings.Contains(e, "Could not open backing file: Parameter 'key-secret' is required for cipher") {
		t.Errorf("io over a plain luks backing file: %s", e)
	}
	if ours, qemu := qimgAndQemu(t, "info", "--backing-chain", pl); ours != qemu {
		t.Errorf("info --backing-chain:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	// Committed into the volume (its key from the same --object).
	mustQ(t, "commit", "--object", luksSecret, ov)
	testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", spec, "-c", "read -P 0x33 3000 100", "-c", "read -P 7 1000 2000")

	// Resized as qemu-img resizes it: the file is the payload longer.
	q2 := filepath.Join(d, "b.luks")
	testkit.MustRun(t, "cp", p, q2)
	for _, rs := range []struct{ flag, size string }{{"-q", "+1M"}, {"--preallocation=full", "+1M"}, {"--shrink", "1000"}} {
		args := []string{"resize", "--object", luksSecret, "--image-opts", rs.flag}
		mustQ(t, append(args, spec, rs.size)...)
		testkit.MustRun(t, "qemu-img", append(args, luksSpec(q2), rs.size)...)
		if a, b := fileSize(t, p), fileSize(t, q2); a != b {
			t.Fatalf("resize %s: file %d bytes, qemu-img's %d", rs.size, a, b)
		}
		// The grown part reads as QEMU's does (the file's zeros, decrypted).
		testkit.MustRun(t, "qemu-img", "compare", "--object", luksSecret, "--image-opts", spec, luksSpec(q2))
	}
	if ours, qemu := qimgAndQemu(t, "info", p); ours != qemu {
		t.Fatalf("after resize:\n%s\nqemu-img:\n%s", ours, qemu)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestLUKS_CreateLikeQemu: qimg create -f luks and convert -O luks make
// volumes QEMU opens with the key, laid out as qemu-img's (info equal but
// for UUIDs and measured iterations), and refuse what qemu-img refuses,
// in its words, leaving no file.
func TestLUKS_CreateLikeQemu(t *testing.T) {
	d := qemuDir(t)
	for _, tc := range []struct{ opts, size string }{
		// qemu-img create takes 2.5 s whatever iter-time says (its
		// PBKDF2 benchmark): two cases.
		{"", "4M"},
		{",cipher-alg=aes-128,cipher-mode=xts,hash-alg=sha512,ivgen-alg=plain,preallocation=full", "1000"},
		{",cipher-alg=twofish-256,cipher-mode=cbc,ivgen-alg=essiv", "2M"},
	} {
		ours, qemu := filepath.Join(d, "o.luks"), filepath.Join(d, "q.luks")
		args := []string{"create", "-f", "luks", "--object", luksSecret, "-o", "key-secret=s,iter-time=20" + tc.opts}
		oout := mustQ(t, append(append([]string(nil), args...), ours, tc.size)...)
		qout := testkit.MustRun(t, "qemu-img", append(append([]string(nil), args...), qemu, tc.size)...)
		if strings.ReplaceAll(oout, ours, "F") != strings.ReplaceAll(qout, qemu, "F") {
			t.Errorf("%s: qimg said\n%sqemu-img\n%s", tc.opts, oout, qout)
		}
		for _, o := range []string{"--output=human", "--output=json"} {
			a := testkit.MustRun(t, "qemu-img", "info", o, ours)
			b := testkit.MustRun(t, "qemu-img", "info", o, qemu)
			a = luksVolatile.ReplaceAllString(strings.ReplaceAll(a, ours, "F"), "$1")
			b = luksVolatile.ReplaceAllString(strings.ReplaceAll(b, qemu, "F"), "$1")
			if a != b {
				t.Errorf("%s: qemu-img info %s of qimg's:\n%s\nof qemu-img's:\n%s", tc.opts, o, a, b)
			}
		}
		if a, b := fileSize(t, ours), fileSize(t, qemu); a != b {
			t.Errorf("%s: file %d bytes, qemu-img's %d", tc.opts, a, b)
		}
		testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", luksSpec(ours), "-c", "write -P 5 100 400", "-c", "read -P 5 100 400")
		mustQ(t, "io", "--object", luksSecret, "--image-opts", luksSpec(ours), "-c", "read -P 5 100 400")
		os.Remove(ours)
		os.Remove(qemu)
	}
	// Converted from a raw image: QEMU reads the same bytes, the zeros
	// too (a new volume reads as noise until they are written).
	raw := filepath.Join(d, "r.img")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 1000 5000", "-c", "write -P 9 2M 1M", raw)
	conv := filepath.Join(d, "c.luks")
	mustQ(t, "convert", "-O", "luks", "--object", luksSecret, "-o", "key-secret=s,iter-time=20", raw, conv)
	testkit.MustRun(t, "qemu-img", "compare", "--object", luksSecret, "--image-opts", "driver=raw,file.filename="+raw, luksSpec(conv))

	// Refusals, each leaving no file.
	n := filepath.Join(d, "n.luks")
	for _, o := range []string{
		"key-secret=s,iter-time=20,cipher-alg=bogus",
		"key-secret=s,iter-time=20,cipher-mode=bogus",
		"key-secret=s,iter-time=20,hash-alg=bogus",
		"key-secret=s,iter-time=20,ivgen-alg=bogus",
		"key-secret=s,iter-time=abc",
		"key-secret=s,cluster_size=4k",
		"iter-time=20",
		"key-secret=nosuch",
		"key-secret=s,iter-time=20,preallocation=bogus",
		// Cipher settings QEMU refuses, in its words.
		"key-secret=s,iter-time=20,cipher-alg=des",
		"key-secret=s,iter-time=20,cipher-alg=cast5-128", // no xts with a 64-bit block
		"key-secret=s,iter-time=20,cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv",
		"key-secret=s,iter-time=20,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha1",
	} {
		args := []string{"create", "-f", "luks", "--object", luksSecret, "-o", o, n, "1M"}
		oout, oerr, ocode := runQ(t, args...)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		_, statErr := os.Stat(n)
		oerr = strings.Replace(oerr, "qimg: create: ", "qemu-img: ", 1)
		if oout != qout || oerr != qerr || ocode != qcode || statErr == nil {
			t.Errorf("-o %s:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s(file left: %t)", o, ocode, oout, oerr, qcode, qout, qerr, statErr == nil)
		}
		os.Remove(n)
	}
	// measure -O luks: the payload offset more than the size (qemu-img
	// runs its PBKDF2 benchmark for each, 2.5-5 s: one measured; --size
	// takes the same path).
	for _, args := range [][]string{
		{"measure", "--output=json", "-O", "luks", "--object", luksSecret, "-o", "key-secret=s", raw},
		{"measure", "-O", "luks", "--size", "1G"},
		{"measure", "-O", "luks", "-o", "key-secret=s", "--size", "1G"},
		{"measure", "-O", "luks", "--object", luksSecret, "-o", "key-secret=s,hash-alg=bogus", "--size", "1G"},
		{"measure", "-O", "luks", "--object", luksSecret, "-o", "key-secret=s,cipher-alg=cast5-128,cipher-mode=ecb", "--size", "1G"},
		// dd has no -o to name a key-secret: refused as its create.
		{"dd", "-O", "luks", "if=" + raw, "of=" + n},
	} {
		oout, oerr, ocode := runQ(t, args...)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		oerr = strings.Replace(oerr, "qimg: "+args[0]+": ", "qemu-img: ", 1)
		if oout != qout || oerr != qerr || ocode != qcode {
			t.Errorf("%q:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s", args, ocode, oout, oerr, qcode, qout, qerr)
		}
	}
	if _, _, code := runQ(t, "convert", "-O", "luks", "--object", luksSecret, "-o", "key-secret=s,iter-time=20", "-B", raw, raw, n); code == 0 {
		t.Error("convert -O luks with a backing file: accepted")
	}
}

// TestLUKS_AmendLikeQemu: qimg amend adds and erases a LUKS volume's
// passphrases as qemu-img amend does (QEMU opens it with the new one,
// not the erased one; the slots info shows are the same), and refuses
// what qemu-img refuses, in its words.
func TestLUKS_AmendLikeQemu(t *testing.T) {
	d := qemuDir(t)
	p := filepath.Join(d, "a.luks")
	qemuLUKS(t, p, "", "1M")
	testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", luksSpec(p), "-c", "write -P 4 0 64k")
	objs := []string{"--object", luksSecret, "--object", "secret,id=t,data=new", "--object", "secret,id=u,data=third"}
	key := "s" // the key-secret the volume is opened with
	amend := func(tool string, opts string, force bool) (string, string, int) {
		args := append(append([]string{"amend"}, objs...), "-o", opts, "--image-opts", "driver=luks,key-secret="+key+",file.filename="+p)
		if force {
			args = append(args, "--force")
		}
		if tool == "qimg" {
			o, e, c := runQ(t, args...)
			return o, strings.Replace(e, "qimg: amend: ", "qemu-img: ", 1), c
		}
		return testkit.Run(t, "qemu-img", args...)
	}
	opens := func(data string) bool {
		_, _, code := testkit.Run(t, "qemu-io", "--object", "secret,id=k,data="+data, "--image-opts",
			"driver=luks,key-secret=k,file.filename="+p, "-c", "read -P 4 0 64k")
		return code == 0
	}
	// qimg adds "new" (slot 1), QEMU opens with it; QEMU adds "third"
	// in slot 5, qimg opens with it; qimg erases "pw" by passphrase.
	if _, e, c := amend("qimg", "state=active,new-secret=t,iter-time=20", false); c != 0 {
		t.Fatalf("add: %s", e)
	}
	if !opens("new") || !opens("pw") {
		t.Fatal("QEMU does not open the volume with both passphrases after qimg added one")
	}
	if _, e, c := amend("qemu-img", "state=active,new-secret=u,keyslot=5,iter-time=20", false); c != 0 {
		t.Fatalf("qemu-img add: %s", e)
	}
	mustQ(t, "io", "--object", "secret,id=k,data=third", "--image-opts", "driver=luks,key-secret=k,file.filename="+p, "-c", "read -P 4 0 64k")
	if _, e, c := amend("qimg", "state=inactive,old-secret=s", false); c != 0 {
		t.Fatalf("erase: %s", e)
	}
	if opens("pw") || !opens("new") || !opens("third") {
		t.Fatal("after erasing pw: QEMU opens with the wrong set of passphrases")
	}
	info := testkit.MustRun(t, "qemu-img", "info", p)
	for _, want := range []string{"[0]:\n            active: false", "[1]:\n            active: true", "[5]:\n            active: true"} {
		if !strings.Contains(info, want) {
			t.Fatalf("qemu-img info lacks %q:\n%s", want, info)
		}
	}
	if ours, qemu := qimgAndQemu(t, "amend", "-f", "luks", "-o", "help", p); ours != qemu {
		t.Errorf("amend -o help:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	// Refusals: each tool on its own copy of the same volume, opened
	// with "new" (slots 1 and 5 hold "new" and "third").
	key = "t"
	q := filepath.Join(d, "q.luks")
	for _, tc := range []struct {
		opts  string
		force bool
	}{
		{"state=active", false},
		{"state=active,new-secret=t,keyslot=1", false},
		{"state=active,new-secret=t,keyslot=-1", false},
		{"state=active,new-secret=t,old-secret=s", false},
		{"state=inactive", false},
		{"state=inactive,keyslot=0", false},
		{"state=inactive,keyslot=-1", false},
		{"state=inactive,new-secret=t", false},
		{"state=inactive,old-secret=s", false},
		{"state=inactive,keyslot=1,old-secret=u", false},
		{"state=bogus", false},
		{"new-secret=t", false},
		{"bogus=1", false},
	} {
		testkit.MustRun(t, "cp", p, q)
		oo, oe, oc := amend("qimg", tc.opts, tc.force)
		p, q = q, p // qemu-img amends the copy
		qo, qe, qc := amend("qemu-img", tc.opts, tc.force)
		p, q = q, p
		if oo != qo || oe != qe || oc != qc || oc == 0 {
			t.Errorf("-o %s:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s", tc.opts, oc, oo, oe, qc, qo, qe)
		}
	}
}

// TestLUKS_AmendQcow2LikeQemu: qimg amend -o encrypt.* changes an
// encrypted qcow2 image's key slots as qemu-img amend does: QEMU opens it
// with the added passphrase and not the erased one, qemu-img check finds
// nothing, and an image without encryption is refused in QEMU's words.
func TestLUKS_AmendQcow2LikeQemu(t *testing.T) {
	d := t.TempDir() // not workDir's: its qemu-img check has no secret
	testkit.NeedQemu(t)
	p := filepath.Join(d, "e.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", luksSecret,
		"-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=20", p, "1M")
	spec := func(key string) string { return "driver=qcow2,encrypt.key-secret=" + key + ",file.filename=" + p }
	testkit.MustRun(t, "qemu-io", "--object", luksSecret, "--image-opts", spec("s"), "-c", "write -P 6 0 64k")
	objs := []string{"--object", luksSecret, "--object", "secret,id=t,data=new"}
	mustQ(t, append(append([]string{"amend"}, objs...), "-o", "encrypt.state=active,encrypt.new-secret=t,encrypt.iter-time=20,lazy_refcounts=on", "--image-opts", spec("s"))...)
	mustQ(t, append(append([]string{"amend"}, objs...), "-o", "encrypt.state=inactive,encrypt.old-secret=s", "--image-opts", spec("t"))...)
	testkit.MustRun(t, "qemu-io", append(objs, "--image-opts", spec("t"), "-c", "read -P 6 0 64k")...)
	if _, _, code := testkit.Run(t, "qemu-io", append(objs, "--image-opts", spec("s"), "-c", "read 0 512")...); code == 0 {
		t.Fatal("the erased passphrase still opens the image")
	}
	testkit.MustRun(t, "qemu-img", append(append([]string{"check"}, objs...), "--image-opts", spec("t"))...)
	info := testkit.MustRun(t, "qemu-img", "info", p)
	for _, want := range []string{"lazy refcounts: true", "[0]:\n                active: false", "[1]:\n                active: true"} {
		if !strings.Contains(info, want) {
			t.Fatalf("qemu-img info lacks %q:\n%s", want, info)
		}
	}
	plain := filepath.Join(d, "p.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", plain, "1M")
	for _, tc := range []struct{ o, img string }{
		{"encrypt.state=active,encrypt.new-secret=t", plain},
		{"encrypt.state=active,encrypt.new-secret=t,encrypt.keyslot=abc", plain},
		{"encrypt.state=active,encrypt.new-secret=t,encrypt.keyslot=abc", "--image-opts " + spec("t")},
		{"encrypt.state=active,encrypt.new-secret=t,encrypt.keyslot=1", "--image-opts " + spec("t")},
		{"encrypt.state=inactive,encrypt.keyslot=1", "--image-opts " + spec("t")},
		{"encrypt.state=inactive,encrypt.new-secret=t", "--image-opts " + spec("t")},
	} {
		args := append(append(append([]string{"amend"}, objs...), "-o", tc.o), strings.Fields(tc.img)...)
		oo, oe, oc := runQ(t, args...)
		qo, qe, qc := testkit.Run(t, "qemu-img", args...)
		if oe = strings.Replace(oe, "qimg: amend: ", "qemu-img: ", 1); oo != qo || oe != qe || oc != qc {
			t.Errorf("%q:\nqimg (exit %d): %s%s\nqemu-img (exit %d): %s%s", args, oc, oo, oe, qc, qo, qe)
		}
	}
}
