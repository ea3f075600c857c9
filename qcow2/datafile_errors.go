package qcow2

import (
	"errors"
	"fmt"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// The errors of external data files (datafile.go, DF1), in QEMU's words.

var (
	// ErrDataFile is matched (errors.Is) by every error about an
	// external data file below, DataFileOpenError included.
	ErrDataFile = errors.New("qcow2: external data file")
	// ErrDataFileRequired: the image has the external data file bit but
	// names no data file, and none was given (Options.DataDevice).
	ErrDataFileRequired error = &dataFileErr{"'data-file' is required for this image"}
	// ErrDataFileNotExpected: Options.DataDevice was given for an image
	// without the external data file bit.
	ErrDataFileNotExpected error = &dataFileErr{"'data-file' can only be set for images with an external data file"}
	// ErrDataFileRawAlone: the raw external data bit without the
	// external data file bit.
	ErrDataFileRawAlone error = &dataFileErr{"data-file-raw requires a data file"}
	// ErrNoDataFile: the image was opened without its data file
	// (Options.NoDataFile, for its metadata only), and a read needed it.
	ErrNoDataFile error = &dataFileErr{"qcow2: the external data file is not open (opened for metadata only)"}
	// ErrSetDataFileName: a data file name asked of an image without an
	// external data file (SetDataFile; qemu-img amend -o data_file=).
	ErrSetDataFileName error = &dataFileErr{"data-file can only be set for images that use an external data file"}
	// ErrSetDataFileRaw: data_file_raw asked of an image whose data file
	// is not raw (SetDataFileRaw): its clusters need not lie at their
	// guest offsets.
	ErrSetDataFileRaw error = &dataFileErr{"data-file-raw cannot be set on existing images"}
)

// dataFileErr is an error of the ErrDataFile family in QEMU's words.
type dataFileErr struct{ msg string }

func (e *dataFileErr) Error() string        { return e.msg }
func (e *dataFileErr) Is(target error) bool { return target == ErrDataFile }

// DataFileOpenError is a data file that could not be opened, worded as
// QEMU words it: an error of the system as its file driver words it,
// "Could not open 'NAME': No such file or directory"; any other (the
// opener's refusal of a directory, say) as it is.
type DataFileOpenError struct {
	Name string
	Err  error
}

func (e *DataFileOpenError) Error() string {
	var en syscall.Errno
	if !errors.As(e.Err, &en) {
		return e.Err.Error()
	}
	return fmt.Sprintf("Could not open '%s': %s", e.Name, strerror(en))
}

func (e *DataFileOpenError) Unwrap() error { return e.Err }

// Is makes a DataFileOpenError match ErrDataFile.
func (e *DataFileOpenError) Is(target error) bool { return target == ErrDataFile }

// DataFileCreateError is a data file that Create could not create,
// worded as QEMU words it: "Could not create 'NAME': No such file or
// directory" for an error of the system, any other as it is.
type DataFileCreateError struct {
	Name string
	Err  error
}

func (e *DataFileCreateError) Error() string {
	var en syscall.Errno
	if !errors.As(e.Err, &en) {
		return e.Err.Error()
	}
	return fmt.Sprintf("Could not create '%s': %s", e.Name, strerror(en))
}

func (e *DataFileCreateError) Unwrap() error { return e.Err }

// Is makes a DataFileCreateError match ErrDataFile.
func (e *DataFileCreateError) Is(target error) bool { return target == ErrDataFile }

// strerror is en as C's strerror words it (capitalized).
func strerror(en syscall.Errno) string {
	s := en.Error()
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}
