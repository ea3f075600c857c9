package qcow2

import (
	"errors"
	"strings"

	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/qcow2/format"
)

// QemuText is an open's error err as QEMU 7.2 words it, for tools that
// speak as qemu-img and qemu-nbd: a hostile header's fault in QEMU's
// message (format FM7), a backing file's failure with QEMU's prefix
// (BackingError, which words its own reason so), a missing key in
// QEMU's words (ErrNoKey without the package's prefix), a wrong one too
// (ErrWrongKey: "Invalid password, cannot unlock any keyslot"); other
// errors keep their own text.
func QemuText(err error) string {
	var be *BackingError
	if errors.As(err, &be) {
		return err.Error()
	}
	if errors.Is(err, ErrWrongKey) {
		return "Invalid password, cannot unlock any keyslot"
	}
	if errors.Is(err, ErrNoKey) {
		return strings.TrimPrefix(ErrNoKey.Error(), "qcow2: encrypted image: ")
	}
	var le *luks.FieldError
	if errors.As(err, &le) && le.Qemu != "" {
		return le.Qemu // the LUKS header's fault (its crypto header extension's)
	}
	return format.QemuText(err)
}
