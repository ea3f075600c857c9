package luks

import (
	"errors"
	"fmt"
)

var (
	// ErrNotLUKS: the bytes do not start with the LUKS magic.
	ErrNotLUKS = errors.New("luks: not a LUKS header (bad magic)")
	// ErrVersion: a LUKS header of a version other than 1 (LUKS2 is not
	// supported).
	ErrVersion = errors.New("luks: unsupported LUKS version")
	// ErrUnsupported: a valid header whose cipher, mode, IV generator or
	// hash this package does not implement.
	ErrUnsupported = errors.New("luks: unsupported algorithm")
	// ErrCorrupt: the header breaks the LUKS1 layout rules.
	ErrCorrupt = errors.New("luks: header is corrupt")
	// ErrWrongKey: no active key slot opens with the passphrase.
	ErrWrongKey = errors.New("luks: invalid passphrase, cannot unlock any key slot")
)

// FieldError names the header field that made a header unacceptable. It
// wraps ErrNotLUKS, ErrVersion, ErrUnsupported or ErrCorrupt.
type FieldError struct {
	Field string
	Msg   string
	Err   error
	// Qemu is QEMU 7.2's message for the same fault, where QEMU makes
	// the same check: tools that speak as qemu-img print it (QemuText).
	Qemu string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Msg)
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(base error, field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...), Err: base}
}

// qemuErr is a FieldError whose message is QEMU's.
func qemuErr(base error, field, format string, a ...any) error {
	m := fmt.Sprintf(format, a...)
	return &FieldError{Field: field, Msg: m, Err: base, Qemu: m}
}

// QemuText is err's text as QEMU words it: the QEMU message of the
// FieldError in it where there is one, else err's own text.
func QemuText(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Qemu != "" {
		return fe.Qemu
	}
	return err.Error()
}
