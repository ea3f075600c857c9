package main

import (
	"fmt"
	"path/filepath"
	"strings"
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

// qemu-img info shows the encrypt block of an image whose cipher, mode,
// IV generator or hash QEMU has and crypto/luks does not (info needs no
// key and reads no data); qimg info failed to open it. The data stays
// refused, with the algorithm named.
func TestInfoLUKS_UnsupportedCipherLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	for i, o := range []string{
		"encrypt.cipher-alg=serpent-256",
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
		if i == 4 {
			continue // supported: plain64 ignores its hash
		}
		if _, errOut, code := runQ(t, "io", "--object", secObj, "--image-opts", imageOpts(p), "-c", "read 0 512"); code != 1 || !strings.Contains(errOut, "not supported") {
			t.Errorf("%s: io: exit %d, %s", o, code, errOut)
		}
	}
}
