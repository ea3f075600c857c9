package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// OpenError is an image that could not be opened, worded as qemu-img
// words it: "Could not open 'PATH': ERR". A host file that could not be
// opened nests a second one, as QEMU's file driver adds its own ("Could
// not open 'x': Could not open 'x': No such file or directory").
type OpenError struct {
	Path string
	Err  error
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("Could not open '%s': %s", e.Path, qcow2.QemuText(e.Err))
}
func (e *OpenError) Unwrap() error { return e.Err }

// errNotQcow2 is what QEMU's qcow2 driver says of a file without the
// qcow2 magic that -f qcow2 names.
var errNotQcow2 = errors.New("Image is not in qcow2 format")

// formatError is -f FORMAT naming another format than qcow2 and raw.
func formatError(format string) error {
	if imgopen.QemuDriver(format) {
		return fmt.Errorf("Driver '%s' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)", format)
	}
	return fmt.Errorf("Unknown driver '%s'", format)
}

// outFormatError is an image format to write (create -f, convert and dd
// -O) other than qcow2, raw, vpc and vmdk, in qemu-img's words: a name it does
// not know is an "Unknown file format"; one it knows (vmdk, vdi...) is
// refused as qemu-img refuses a format driver it cannot create images
// with.
func outFormatError(format string) error {
	return outFormatErrorOf(format, "qcow2, raw, vpc, vmdk, luks")
}

// outFormatErrorOf is outFormatError for a command that writes the
// formats listed in supported.
func outFormatErrorOf(format, supported string) error {
	if imgopen.QemuDriver(format) {
		return fmt.Errorf("Format driver '%s' is not supported by qimg (%s)", format, supported)
	}
	return fmt.Errorf("Unknown file format '%s'", format)
}

// backingFormatError is a backing format (-F) other than qcow2 and raw,
// as qemu-img's failure to open the backing file words it.
func backingFormatError(format string) error {
	return fmt.Errorf("%w\nCould not open backing image.", formatError(format))
}

// hostOpenError is err, an error opening the host file at path, as
// QEMU's file driver words it, or nil if err is not one (another file's
// error, a backing file's, keeps its own words).
func hostOpenError(path string, err error) error {
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		return nil
	}
	return &OpenError{Path: path, Err: cError(pe.Err)}
}

// specFileError is err of a spec's open with a host file's failure in
// the file driver's words (hostOpenError); other errors as they are.
func specFileError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if oe := hostOpenError(pe.Path, err); oe != nil {
			return oe
		}
	}
	return err
}

// cError is err as C's strerror words an errno ("No such file or
// directory"); other errors as they are.
func cError(err error) error {
	var en syscall.Errno
	if !errors.As(err, &en) {
		return err
	}
	return &capitalized{err: en}
}

// capitalized is an error whose text starts with a capital letter.
type capitalized struct{ err error }

func (c *capitalized) Error() string {
	s := c.err.Error()
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

func (c *capitalized) Unwrap() error { return c.err }

// hasQcow2Magic reports whether the file at path starts with the qcow2
// magic; a file that cannot be read is given the benefit of the doubt
// (opening it reports why).
func hasQcow2Magic(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	b := make([]byte, 4)
	if _, err := io.ReadFull(f, b); err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return true
	}
	return string(b) == "QFI\xfb"
}
