package qcow2

import (
	"fmt"
	"io"
	"os"

	"github.com/qring/qring/qcow2/format"
)

// Probe returns the format QEMU would probe for the file at path
// (format.Probe on its first sector; an empty file is raw): "qcow2",
// "raw", or another format's name, which OpenFormat refuses with a
// *FormatError.
func Probe(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, format.ProbeLen)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return "", err
	}
	if n == 0 {
		return "raw", nil // find_image_format: an empty file is raw
	}
	return format.Probe(head[:n], path), nil
}

// FormatError is an image of a format the engine does not open: only
// qcow2 and raw are. Probed says the format was probed (Probe), not
// given: QEMU would open such a file as its format, so reading its bytes
// as a raw image instead would show the guest other data. It matches
// ErrUnsupported.
type FormatError struct {
	Format string
	Probed bool
}

func (e *FormatError) Error() string {
	if e.Probed {
		return fmt.Sprintf("image format %q (probed) is not supported, only qcow2 and raw: "+
			"give the format as raw (-f raw, driver=raw, or a backing format raw) to use the file's bytes", e.Format)
	}
	return fmt.Sprintf("image format %q is not supported, only qcow2 and raw", e.Format)
}

// Is makes errors.Is(err, ErrUnsupported) hold.
func (e *FormatError) Is(target error) bool { return target == ErrUnsupported }
