package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// openError is a failure to open the image. As qemu-nbd does
// (error_reportf_err(..., "Failed to blk_new_open '%s': ", argv[optind])),
// it names the image as it was given, a file name or the whole spec of
// --image-opts or json:, in qemu-nbd's words, before the reason: the
// reasons name the file that failed, or none at all (a lock, a missing
// key, a file that is no qcow2 image), and a script starting several
// servers, or whoever reads its log, must see which image it was.
type openError struct {
	image  string // as given
	host   string // its host file ("file:x" is x; none for a spec)
	format string // -f's (none for a spec)
	err    error
}

func (e *openError) Error() string {
	return fmt.Sprintf("Failed to blk_new_open '%s': %v", e.image, qemuReason(e.host, e.format, e.err))
}

func (e *openError) Unwrap() error { return e.err }

// qemuReason words the two commonest reasons as QEMU's drivers do: a
// host file that cannot be opened ("Could not open 'x': No such file or
// directory", the file driver's) and, under -f qcow2, a file without the
// qcow2 magic ("Image is not in qcow2 format", the qcow2 driver's).
// Others keep the engine's words.
func qemuReason(host, format string, err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "open" && host != "" && pe.Path == host { // the image's own file, not a backing file
		s := pe.Err.Error()
		return fmt.Sprintf("Could not open '%s': %s%s", pe.Path, strings.ToUpper(s[:1]), s[1:])
	}
	var de *imgopen.DriverError
	if errors.As(err, &de) && imgopen.QemuDriver(de.Name) {
		return fmt.Sprintf("Driver '%s' is not supported by qnbd (qcow2, raw, vpc, vmdk)", de.Name)
	}
	if format == "qcow2" && host != "" {
		if b, rerr := readHead(host); rerr == nil && !bytes.HasPrefix(b, []byte("QFI\xfb")) {
			return "Image is not in qcow2 format"
		}
	}
	return qcow2.QemuText(err)
}

// readHead reads the first bytes of a file.
func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 4)
	n, _ := f.Read(b)
	return b[:n], nil
}
