package imgopen

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
)

// ErrNativeAIO is FileOptions' answer to aio=native: QEMU's Linux AIO
// backend, which qring does not have.
var ErrNativeAIO = errors.New("aio=native (Linux AIO) is not supported: use io_uring (the default) or threads")

// RingError is the failure of an explicit aio=io_uring where no ring can
// be set up (an old kernel, io_uring_disabled, a seccomp profile that
// blocks io_uring_setup, as in many containers). The default AIO falls
// back to threads instead.
type RingError struct{ Err error }

func (e *RingError) Error() string { return "Unable to use io_uring: " + e.Err.Error() }
func (e *RingError) Unwrap() error { return e.Err }

// NotFileError is the error for an image path that names neither a
// regular file nor a block device (a directory, a FIFO, a socket, a
// character device), in QEMU's words.
type NotFileError struct{ Path string }

func (e *NotFileError) Error() string {
	return fmt.Sprintf("'file' driver requires '%s' to be a regular file", e.Path)
}

// checkFileType returns a NotFileError when path exists and is neither a
// regular file nor a block device. A path that does not exist passes: the
// open that follows reports it. It stats before any open, so a FIFO is
// refused without blocking in open(2). An empty regular file is fine: it
// probes as a 0-byte raw image, as in QEMU.
func checkFileType(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	m := fi.Mode()
	if m.IsRegular() || (m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0) {
		return nil
	}
	return &NotFileError{Path: path}
}

// SimulateNoRing makes the opens that follow behave as if no io_uring
// ring could be set up here, for err, until restore is called: for tests
// of the commands (an explicit io_uring fails, the default falls back to
// threads). Not safe to call while another goroutine opens images.
func SimulateNoRing(err error) (restore func()) {
	old := probeRing
	probeRing = func() error { return err }
	return func() { probeRing = old }
}

// OptionError is a spec option the node's driver does not take, in
// QEMU's words (bdrv_open_inherit): a format's "does not support", a
// protocol's (the file node) "doesn't support". It is an error of the
// open, not of the command line: qimg prints it as "Could not open".
type OptionError struct {
	Driver, Option string
	Protocol       bool
}

func (e *OptionError) Error() string {
	if e.Protocol {
		return fmt.Sprintf("Block protocol '%s' doesn't support the option '%s'", e.Driver, e.Option)
	}
	return fmt.Sprintf("Block format '%s' does not support the option '%s'", e.Driver, e.Option)
}

// ValueError is an option value an --image-opts node refuses, in QEMU's
// words ("invalid parameter value: foo"): like OptionError, an error of
// the open, not of the command line.
type ValueError struct{ Msg string }

func (e *ValueError) Error() string { return e.Msg }

// DriverError is an --image-opts node naming a driver qring does not
// have: QEMU says "Unknown driver" for a name it does not know either;
// the CLIs say which of QEMU's drivers they lack.
type DriverError struct{ Name string }

// qemuDrivers are the block drivers of qemu-img 7.2 ("Supported formats"
// of qemu-img --help): another name is an unknown driver to QEMU too.
var qemuDrivers = []string{"blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress",
	"copy-before-write", "copy-on-read", "dmg", "file", "ftp", "ftps", "gluster", "host_cdrom",
	"host_device", "http", "https", "iscsi", "iser", "luks", "nbd", "nfs", "null-aio", "null-co",
	"nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum", "raw", "rbd",
	"replication", "snapshot-access", "ssh", "throttle", "vdi", "vhdx", "vmdk", "vpc", "vvfat"}

// QemuDriver reports whether QEMU 7.2's tools have a block driver of
// that name (-f, driver=).
func QemuDriver(name string) bool { return slices.Contains(qemuDrivers, name) }

func (e *DriverError) Error() string { return fmt.Sprintf("Unknown driver '%s'", e.Name) }

// errNoFileName is a file node without its file name, in QEMU's words.
var errNoFileName = &ValueError{Msg: "The 'file' block driver requires a file name"}

// TempFileError is the failure to create a temporary overlay's file
// (OpenTemp), in QEMU's words: "Could not open temporary file 'NAME':
// No such file or directory".
type TempFileError struct {
	Path string
	Err  error
}

func (e *TempFileError) Error() string {
	msg := e.Err.Error()
	var en syscall.Errno
	if errors.As(e.Err, &en) && msg != "" {
		msg = strings.ToUpper(msg[:1]) + msg[1:] // strerror's words
	}
	return fmt.Sprintf("Could not open temporary file '%s': %s", e.Path, msg)
}

func (e *TempFileError) Unwrap() error { return e.Err }
