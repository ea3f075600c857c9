package qcow2

import (
	"errors"
	"fmt"
	"os"
	"unicode"
	"unicode/utf8"
)

// BackingError is a backing file that could not be opened, worded as
// QEMU words it: "Could not open backing file: " before the reason, and
// for a host file that could not be opened the file driver's "Could not
// open 'PATH': No such file or directory". A chain nests one per level,
// as QEMU's messages do.
type BackingError struct {
	File string // the name the header gives
	Err  error
}

func (e *BackingError) Error() string {
	var inner *BackingError
	var pe *os.PathError
	if !errors.As(e.Err, &inner) && errors.As(e.Err, &pe) && pe.Op == "open" {
		s := pe.Err.Error()
		r, n := utf8.DecodeRuneInString(s)
		return fmt.Sprintf("Could not open backing file: Could not open '%s': %c%s", pe.Path, unicode.ToUpper(r), s[n:])
	}
	return "Could not open backing file: " + QemuText(e.Err)
}

func (e *BackingError) Unwrap() error { return e.Err }
