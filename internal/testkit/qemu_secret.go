package testkit

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// QemuSecretArgs are the qemu-img / qemu-io arguments that open the
// LUKS-encrypted qcow2 image at path with passphrase secret:
//
//	--object secret,id=sec0,data=SECRET --image-opts driver=qcow2,encrypt.key-secret=sec0,file.filename=PATH
//
// (commas in the values are doubled, as QEMU's option syntax wants).
func QemuSecretArgs(path, secret string) []string {
	esc := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	return []string{"--object", "secret,id=sec0,data=" + esc(secret), "--image-opts",
		"driver=qcow2,encrypt.key-secret=sec0,file.filename=" + esc(path)}
}

// QemuImgCheckSecret is QemuImgCheck for an encrypted image: qemu-img
// check needs the secret to open it.
func QemuImgCheckSecret(path, secret string) (QemuCheckResult, error) {
	return qemuImgCheck(path, QemuSecretArgs(path, secret)...)
}

// QemuCheckSecretReport is QemuCheckReport for an encrypted image.
func QemuCheckSecretReport(path, secret string, ok func(QemuCheckResult) bool) error {
	if !haveQemuImg() && !HaveQemu() {
		return nil
	}
	r, err := QemuImgCheckSecret(path, secret)
	if err != nil {
		return err
	}
	if ok(r) {
		return nil
	}
	human, _ := exec.Command("qemu-img", append([]string{"check"}, QemuSecretArgs(path, secret)...)...).CombinedOutput()
	return fmt.Errorf("qemu-img check %s: %s\n%s%s", path, r, r.Stderr, human)
}

// QemuCheckSecret fails t unless qemu-img check, given the secret, finds
// the encrypted image at path clean. Without qemu-img it does nothing.
func QemuCheckSecret(t testing.TB, path, secret string) {
	t.Helper()
	if err := QemuCheckSecretReport(path, secret, QemuCheckResult.Clean); err != nil {
		t.Fatal(err)
	}
}

// QemuCheckSecretNoCorruption is QemuCheckNoCorruption for an encrypted
// image.
func QemuCheckSecretNoCorruption(t testing.TB, path, secret string) bool {
	t.Helper()
	if err := QemuCheckSecretReport(path, secret, QemuCheckResult.NoCorruption); err != nil {
		t.Error(err)
		return false
	}
	return true
}
