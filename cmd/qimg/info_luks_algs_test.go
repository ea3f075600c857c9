package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/internal/testkit"
)

// QEMU's encrypt.ivgen-hash-alg makes cipher_mode "xts-plain64:sha256";
// qemu-img info shows "ivgen alg: plain64" (the hash only for essiv),
// qimg showed "plain64:sha256".
func TestInfoLUKS_IVGenHash(t *testing.T) {
	for mode, want := range map[string]string{"xts-plain64:sha256": "plain64", "xts-plain:sha1": "plain", "xts-plain64": "plain64"} {
		h := &luks.Header{Version: 1, CipherName: "aes", CipherMode: mode, HashSpec: "sha256", KeyBytes: 64}
		if got := newLUKSInfo(h); got.IVGenAlg != want || got.CipherMode != "xts" {
			t.Errorf("%s: ivgen alg %q, cipher mode %q, want %q, xts", mode, got.IVGenAlg, got.CipherMode, want)
		}
	}
}

// Images qemu-img made with each of QEMU's other ciphers, modes, IV
// generators and hashes: qimg info shows their encrypt block as qemu-img
// does (info needs no key), and the data each tool writes the other
// reads (qimg refused all of these but plain64's ignored hash).
func TestLUKS_CiphersLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	for i, o := range []string{
		"encrypt.cipher-alg=serpent-128,encrypt.cipher-mode=ctr",
		"encrypt.cipher-alg=twofish-128,encrypt.cipher-mode=cbc",
		"encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256",
		"encrypt.cipher-alg=cast5-128,encrypt.cipher-mode=cbc,encrypt.hash-alg=ripemd160",
		"encrypt.ivgen-hash-alg=sha512", // xts-plain64:sha512
	} {
		p := filepath.Join(dir, fmt.Sprintf("u%d.qcow2", i))
		testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", secObj,
			"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,"+o, p, "1M")
		for _, f := range []string{"human", "json"} {
			if ours, theirs := qimgAndQemu(t, "info", "--output="+f, p); ours != theirs {
				t.Errorf("%s: info --output=%s:\nqimg: %sqemu: %s", o, f, ours, theirs)
			}
		}
		testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "write -P 0x3c 1000 70000")
		mustQ(t, "io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "read -P 0x3c 1000 70000", "-c", "write -P 0xd2 300000 5000")
		testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "read -P 0xd2 300000 5000", "-c", "read -P 0x3c 1000 70000", "-c", "read -P 0 71000 229000")
		testkit.MustRun(t, "qemu-img", "check", "-q", "--object", secObj, "--image-opts", imageOpts(p))
	}
}
