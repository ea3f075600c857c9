package format

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt: the image violates the qcow2 specification.
	ErrCorrupt = errors.New("qcow2: image is corrupt")
	// ErrUnsupported: a valid image uses a feature this engine does not
	// implement.
	ErrUnsupported = errors.New("qcow2: unsupported feature")
	// ErrNotQcow2: the file is no qcow2 image at all (its magic is
	// wrong: a raw image, another format, a text file). Not ErrCorrupt:
	// nothing there is for a repair to mend.
	ErrNotQcow2 = errors.New("qcow2: not a qcow2 image")
)

// FieldError names the field that made an image unacceptable (FM2).
type FieldError struct {
	Field string
	Value uint64
	Msg   string
	Err   error // ErrCorrupt, ErrUnsupported or ErrNotQcow2
	// Qemu is QEMU 7.2's message for the same fault, where QEMU makes
	// the same check (FM7): tools that speak as qemu-img print it.
	Qemu string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s = %#x: %s", e.Err, e.Field, e.Value, e.Msg)
}

func (e *FieldError) Unwrap() error { return e.Err }

func corrupt(field string, v uint64, format string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(format, a...), Err: ErrCorrupt}
}

func unsupported(field string, v uint64, format string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(format, a...), Err: ErrUnsupported}
}

func corruptQ(field string, v uint64, qemu, format string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(format, a...), Err: ErrCorrupt, Qemu: qemu}
}

func unsupportedQ(field string, v uint64, qemu, format string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(format, a...), Err: ErrUnsupported, Qemu: qemu}
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
