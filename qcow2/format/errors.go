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
)

// FieldError names the field that made an image unacceptable (FM2).
type FieldError struct {
	Field string
	Value uint64
	Msg   string
	Err   error // ErrCorrupt or ErrUnsupported
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
