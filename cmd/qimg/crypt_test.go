package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

const secObj = "secret,id=sec0,data=abc"

func imageOpts(p string) string { return "driver=qcow2,encrypt.key-secret=sec0,file.filename=" + p }

// The acceptance case through the binaries: qemu-img creates an
// encrypted image, qimg io writes it cluster-misaligned, qemu-io reads
// it with the same secret; and the reverse (qimg create, qemu-io writes,
// qimg io reads). Every command of qimg that opens an image takes
// --object and --image-opts as qemu-img does.
func TestCrypt_CLIInterop(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := testkit.Dir(t)
	q := filepath.Join(dir, "q.qcow2")
	create := []string{"create", "-f", "qcow2", "--object", secObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"}
	testkit.MustRun(t, "qemu-img", append(create, q, "1M")...)
	mustQ(t, "io", "--object", secObj, "--image-opts", imageOpts(q),
		"-c", "write -P 0x5a 1536 5000", "-c", "write -P 0x33 66536 3000", "-c", "write -P 0x44 120000 70000")
	testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(q),
		"-c", "read -P 0x5a 1536 5000", "-c", "read -P 0x33 66536 3000", "-c", "read -P 0x44 120000 70000",
		"-c", "read -P 0 0 1536", "-c", "read -P 0 69536 50464")
	testkit.QemuCheckSecret(t, q, "abc")
	mustQ(t, "check", "--object", secObj, "--image-opts", imageOpts(q))

	w := filepath.Join(dir, "w.qcow2")
	ours, theirs := mustQ(t, append(create, w, "1M")...), testkit.MustRun(t, "qemu-img", append(create, w+".q", "1M")...)
	if strings.ReplaceAll(theirs, ".q'", "'") != ours {
		t.Errorf("create output:\nqimg: %sqemu: %s", ours, theirs)
	}
	testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(w),
		"-c", "write -P 0x5a 1536 5000", "-c", "write -P 0x33 66536 3000")
	mustQ(t, "io", "--object", secObj, "--image-opts", imageOpts(w),
		"-c", "read -P 0x5a 1536 5000", "-c", "read -P 0x33 66536 3000", "-c", "read -P 0 0 1536")
	mustQ(t, "check", "--object", secObj, "--image-opts", imageOpts(w))
	testkit.QemuCheckSecret(t, w, "abc")

	// info needs no key; check and map do, as in QEMU.
	if out := mustQ(t, "info", w); !strings.Contains(out, "encrypted: yes") {
		t.Errorf("info:\n%s", out)
	}
	for _, f := range []string{"human", "json"} {
		if ours, theirs := qimgAndQemu(t, "info", "--output="+f, w); ours != theirs {
			t.Errorf("info --output=%s:\nqimg: %sqemu: %s", f, ours, theirs)
		}
	}
	if _, errOut, code := runQ(t, "check", w); code != 1 || !strings.Contains(errOut, "encrypt.key-secret") {
		t.Errorf("check without the secret: exit %d, %s", code, errOut)
	}
	ours, theirs = qimgAndQemu(t, "map", "--output=json", "--object", secObj, "--image-opts", imageOpts(w))
	// QEMU 7.2 prints no "compressed" (qimg follows 8.2's layout).
	if strings.ReplaceAll(ours, `, "compressed": false`, "") != theirs {
		t.Errorf("map:\nqimg: %sqemu: %s", ours, theirs)
	}

	// convert out of and into encrypted images; compare between them.
	raw := filepath.Join(dir, "w.raw")
	mustQ(t, "convert", "--object", secObj, "--image-opts", imageOpts(w), "-O", "raw", raw)
	qraw := filepath.Join(dir, "q.raw")
	testkit.MustRun(t, "qemu-img", "convert", "--object", secObj, "--image-opts", imageOpts(w), "-O", "raw", qraw)
	a, _ := os.ReadFile(raw)
	b, _ := os.ReadFile(qraw)
	testkit.MustEqual(t, a, b, "qimg convert vs qemu-img convert")
	c := filepath.Join(dir, "c.qcow2")
	mustQ(t, "convert", "--object", secObj, "-O", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", raw, c)
	testkit.MustRun(t, "qemu-img", "compare", "--object", secObj, "--image-opts", imageOpts(c), "driver=raw,file.filename="+raw)
	mustQ(t, "compare", "--object", secObj, "--image-opts", imageOpts(c), imageOpts(w))
	testkit.QemuCheckSecret(t, c, "abc")
	mustQ(t, "check", "--object", secObj, "--image-opts", imageOpts(c))

	// A wrong secret: a clear error, and not a byte changed.
	before, _ := os.ReadFile(w)
	_, errOut, code := runQ(t, "io", "--object", "secret,id=sec0,data=abd", "--image-opts", imageOpts(w), "-c", "write 0 512")
	if code != 1 || !strings.Contains(errOut, "Invalid password, cannot unlock any keyslot") { // QEMU's words
		t.Errorf("wrong secret: exit %d, %s", code, errOut)
	}
	after, _ := os.ReadFile(w)
	if !bytes.Equal(before, after) {
		t.Error("a failed open with a wrong secret changed the image")
	}
}

// measure counts the LUKS header area as qemu-img does.
func TestCrypt_Measure(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	for _, o := range []string{"", ",cluster_size=4k", ",encrypt.cipher-alg=aes-128"} {
		args := []string{"measure", "-O", "qcow2", "--size", "1G", "--object", secObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10" + o}
		if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
			t.Errorf("%s:\nqimg: %sqemu: %s", o, ours, theirs)
		}
	}
	if _, errOut, code := runQ(t, "measure", "-O", "qcow2", "--size", "1G", "-o", "encrypt.format=luks"); code != 1 || !strings.Contains(errOut, "encrypt.key-secret") {
		t.Errorf("no key-secret: exit %d, %s", code, errOut)
	}
	// A value a cipher option does not have, in qemu-img's words.
	for _, o := range []string{"encrypt.cipher-alg=foo", "encrypt.hash-alg=foo", "encrypt.ivgen-alg=foo"} {
		args := []string{"measure", "-O", "qcow2", "--size", "1G", "--object", secObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0," + o}
		_, oe, oc := runQ(t, args...)
		_, qe, qc := testkit.Run(t, "qemu-img", args...)
		if oc != 1 || qc != 1 || strings.TrimPrefix(oe, "qimg: measure: ") != strings.TrimPrefix(qe, "qemu-img: ") {
			t.Errorf("%s: qimg exit %d %q, qemu-img exit %d %q", o, oc, oe, qc, qe)
		}
	}
	// A key-secret naming no secret: qemu-img's error (qimg measured).
	args := []string{"measure", "-O", "qcow2", "--size", "1G", "--object", secObj, "-o", "encrypt.format=luks,encrypt.key-secret=nosuch"}
	_, oe, oc := runQ(t, args...)
	_, qe, qc := testkit.Run(t, "qemu-img", args...)
	if oc != 1 || qc != 1 || strings.TrimPrefix(oe, "qimg: measure: ") != strings.TrimPrefix(qe, "qemu-img: ") {
		t.Errorf("unknown secret: qimg exit %d %q, qemu-img exit %d %q", oc, oe, qc, qe)
	}
}

// snapshot and resize open encrypted images with --object and
// --image-opts too; data written before a snapshot reads back through
// qemu-io after applying it.
func TestCrypt_CLISnapshotResize(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "s.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", "--object", secObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", p, "1M")
	sec := []string{"--object", secObj, "--image-opts", imageOpts(p)}
	mustQ(t, append([]string{"io", "-c", "write -P 1 1000 70000"}, sec...)...)
	mustQ(t, append([]string{"snapshot", "-c", "s1"}, sec...)...)
	mustQ(t, append([]string{"io", "-c", "write -P 2 512 2000"}, sec...)...) // COW of a shared cluster
	testkit.MustRun(t, "qemu-io", append([]string{"-c", "read -P 2 512 2000", "-c", "read -P 1 2512 68488"}, sec...)...)
	mustQ(t, append([]string{"snapshot", "-a", "s1"}, sec...)...)
	testkit.MustRun(t, "qemu-io", append([]string{"-c", "read -P 0 0 1000", "-c", "read -P 1 1000 70000"}, sec...)...)
	mustQ(t, append([]string{"resize"}, append(sec, "+1M")...)...)
	if out := testkit.MustRun(t, "qemu-img", "info", p); !strings.Contains(out, "virtual size: 2 MiB") {
		t.Errorf("after resize:\n%s", out)
	}
	testkit.QemuCheckSecret(t, p, "abc")
	mustQ(t, "check", "--object", secObj, "--image-opts", imageOpts(p))
}

// convert -c into an encrypted image is refused before anything is
// created, with qemu-img's message.
func TestCrypt_ConvertCompressedRefused(t *testing.T) {
	dir := testkit.Dir(t)
	raw := filepath.Join(dir, "s.raw")
	if err := os.WriteFile(raw, bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "c.qcow2")
	_, errOut, code := runQ(t, "convert", "-c", "--object", secObj, "-O", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", raw, out)
	if code != 1 || !strings.Contains(errOut, "Compression and encryption not supported at the same time") { // qemu-img's words
		t.Errorf("exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the target was created")
	}
}

// TestCrypt_CommitImageOpts: a LUKS overlay is committed into its plain
// backing file with --object and --image-opts, as with qemu-img: the
// base holds the overlay's data afterwards (read by qemu-io), and the
// overlay, emptied, still reads the same through its key.
func TestCrypt_CommitImageOpts(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	base, over := filepath.Join(d, "base.qcow2"), filepath.Join(d, "over.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", base)
	mustQ(t, "create", "-q", "-f", "qcow2", "--object", secObj, "-b", base, "-F", "qcow2",
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", over, "1M")
	sec := []string{"--object", secObj, "--image-opts", imageOpts(over)}
	mustQ(t, append([]string{"io", "-c", "write -P 2 4096 70000"}, sec...)...)
	if out := mustQ(t, append([]string{"commit"}, sec...)...); !strings.Contains(out, "Image committed.") {
		t.Errorf("commit: %q", out)
	}
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 4096", "-c", "read -P 2 4096 70000", "-c", "read -P 1 74096 974480", base)
	testkit.MustRun(t, "qemu-io", append([]string{"-c", "read -P 2 4096 70000", "-c", "alloc 0 1M"}, sec...)...)
	if out := testkit.MustRun(t, "qemu-io", append([]string{"-c", "alloc 0 1M"}, sec...)...); !strings.Contains(out, "0/1048576 bytes allocated") {
		t.Errorf("overlay after commit:\n%s", out)
	}
	testkit.MustRun(t, "qemu-img", "check", base)
	testkit.QemuCheckSecret(t, over, "abc")
}

// TestCrypt_AmendRebaseImageOpts: amend and rebase open a LUKS image
// through --object and --image-opts, as qemu-img does (the option was
// accepted and its argument taken for a file name).
func TestCrypt_AmendRebaseImageOpts(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	base, base2, over := filepath.Join(d, "base.qcow2"), filepath.Join(d, "base2.qcow2"), filepath.Join(d, "over.qcow2")
	for _, b := range []string{base, base2} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "1M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", b)
	}
	mustQ(t, "create", "-q", "-f", "qcow2", "--object", secObj, "-b", base, "-F", "qcow2",
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", over, "1M")
	sec := []string{"--object", secObj, "--image-opts", imageOpts(over)}
	mustQ(t, append([]string{"io", "-c", "write -P 2 4096 4096"}, sec...)...)
	mustQ(t, append([]string{"amend", "-o", "lazy_refcounts=on"}, sec...)...)
	if out := testkit.MustRun(t, "qemu-img", "info", over); !strings.Contains(out, "lazy refcounts: true") {
		t.Errorf("after amend:\n%s", out)
	}
	mustQ(t, append([]string{"rebase", "-u", "-b", base2, "-F", "qcow2"}, sec...)...)
	if out := testkit.MustRun(t, "qemu-img", "info", over); !strings.Contains(out, "backing file: "+base2) {
		t.Errorf("after rebase:\n%s", out)
	}
	testkit.MustRun(t, "qemu-io", append([]string{"-c", "read -P 1 0 4096", "-c", "read -P 2 4096 4096", "-c", "read -P 1 8192 1040384"}, sec...)...)
	testkit.QemuCheckSecret(t, over, "abc")
}

// An empty secret is a passphrase like any other: qemu-img creates an
// image with `--object secret,id=sec0,data=` and qemu-io reads it; qimg
// took it for no secret at all ("Parameter 'encrypt.key-secret' is
// required for cipher") and could neither open nor create one (review
// 53).
func TestCrypt_EmptySecret(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	const obj = "secret,id=sec0,data="
	q := filepath.Join(dir, "q.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", obj,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", q, "1M")
	testkit.MustRun(t, "qemu-io", "--object", obj, "--image-opts", imageOpts(q), "-c", "write -P 0x5a 0 4k")
	if _, errOut, code := runQ(t, "io", "--object", obj, "--image-opts", imageOpts(q), "-c", "read -P 0x5a 0 4k"); code != 0 {
		t.Errorf("qimg io of QEMU's image with an empty secret: exit %d: %s", code, errOut)
	}
	w := filepath.Join(dir, "w.qcow2")
	if _, errOut, code := runQ(t, "create", "-f", "qcow2", "--object", obj,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", w, "1M"); code != 0 {
		t.Fatalf("qimg create with an empty secret: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runQ(t, "io", "--object", obj, "--image-opts", imageOpts(w), "-c", "write -P 0x6b 0 4k"); code != 0 {
		t.Fatalf("qimg io write with an empty secret: exit %d: %s", code, errOut)
	}
	testkit.MustRun(t, "qemu-io", "--object", obj, "--image-opts", imageOpts(w), "-c", "read -P 0x6b 0 4k")
	// A wrong (non-empty) secret still fails, and so does none.
	if _, _, code := runQ(t, "io", "--object", "secret,id=sec0,data=x", "--image-opts", imageOpts(w), "-c", "read 0 4k"); code == 0 {
		t.Error("qimg io with a wrong secret succeeded")
	}
	if _, _, code := runQ(t, "io", "-c", "read 0 4k", w); code == 0 {
		t.Error("qimg io without a secret succeeded")
	}
}

// A qcow2 version 2 image with LUKS (crypt_method 2), as qemu-img makes
// it with compat=0.10 and amend downgrades to it: qimg creates it as
// qemu-img does (it refused, "requires compat=1.1"), opens QEMU's (it
// refused the header as corrupt), writes it, and downgrades and
// upgrades an image as qemu-img amend does (it refused).
func TestCrypt_Version2LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := t.TempDir() // its images need the secret to check
	create := []string{"create", "-f", "qcow2", "--object", secObj, "-o", "compat=0.10,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"}
	ours, theirs := filepath.Join(dir, "o.qcow2"), filepath.Join(dir, "q.qcow2")
	oc, qc := mustQ(t, append(create, ours, "1M")...), testkit.MustRun(t, "qemu-img", append(create, theirs, "1M")...)
	if strings.ReplaceAll(qc, "q.qcow2", "o.qcow2") != oc {
		t.Errorf("create output:\nqimg: %sqemu: %s", oc, qc)
	}
	for _, p := range []string{ours, theirs} {
		a, b := qimgAndQemu(t, "info", "--output=json", p)
		if strip := func(s string) string {
			return regexp.MustCompile(`(?m)^.*"(actual-size|filename|payload-offset|.*uuid|hash-iterations|iters|stripes|key-offset)".*\n`).ReplaceAllString(s, "")
		}; strip(a) != strip(b) {
			t.Errorf("info of %s:\nqimg: %s\nqemu: %s", p, a, b)
		}
		mustQ(t, "io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "write -P 0x5a 1536 5000")
		testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "read -P 0x5a 1536 5000", "-c", "write -P 0x33 66536 3000")
		mustQ(t, "io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "read -P 0x33 66536 3000", "-c", "read -P 0 0 1536")
		testkit.QemuCheckSecret(t, p, "abc")
		mustQ(t, "check", "--object", secObj, "--image-opts", imageOpts(p))
	}
	// amend: down and up, with a zero cluster (encrypted zeros in v2).
	// qemu-img 7.2's own downgrade writes that cluster as plain zeros,
	// which read back through the cipher as garbage: it is not run.
	{
		p := filepath.Join(dir, "amend.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", secObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", p, "1M")
		testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "write -P 7 0 192k", "-c", "write -z 64k 64k")
		for _, compat := range []string{"0.10", "1.1"} {
			args := []string{"amend", "--object", secObj, "-o", "compat=" + compat, "--image-opts", imageOpts(p)}
			mustQ(t, args...)
			if info := testkit.MustRun(t, "qemu-img", "info", p); !strings.Contains(info, "compat: "+compat) {
				t.Errorf("amend compat=%s:\n%s", compat, info)
			}
			testkit.QemuCheckSecret(t, p, "abc")
			testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "read -P 7 0 64k", "-c", "read -P 0 64k 64k", "-c", "read -P 7 128k 64k")
		}
	}
}
