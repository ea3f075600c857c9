// Package protocol reads an image's file name as QEMU's block layer does
// (bdrv_find_protocol): "NAME:rest", where NAME holds no '/', names a
// protocol driver, not a file, unless the whole name is a host device.
// qring opens and creates files, and opens NBD exports: "file:" is
// stripped (and "host_device:", "host_cdrom:" when they name a device),
// an nbd, nbd+tcp or nbd+unix name is returned as it is for the opener
// to connect to (and a creation to format), every other protocol
// QEMU knows is refused in qemu-img's words, and a name QEMU does
// not know is an "Unknown protocol" there as here. Without this, qimg
// created a file literally named "json:{...}" or "nbd:host" where
// qemu-img refuses, and failed to open "file:disk.qcow2", which qemu-img
// opens.
//
// The table is qemu-img 7.2's with Debian's qemu-block-extra modules
// (curl, gluster, iscsi, nfs, rbd, ssh).
package protocol

import (
	"fmt"
	"os"
	"strings"
)

// class is what qemu-img does with a protocol driver when asked to
// create an image through it.
type class int

const (
	// noCreate: the driver cannot create; qemu-img refuses before its
	// "Formatting" line.
	noCreate class = iota
	// openInstead: creation falls back to opening what exists
	// (bdrv_co_create_opts_simple); qemu-img refuses after "Formatting".
	openInstead
	// remote: a driver of its own creates on a remote server; refused
	// here after "Formatting", as qemu-img's driver would fail there.
	remote
)

type driver struct {
	name  string // the driver's format name, as qemu-img's messages say it
	class class
}

// drivers are the protocols qemu-img knows but "file".
var drivers = map[string]driver{
	"http": {"http", noCreate}, "https": {"https", noCreate},
	"ftp": {"ftp", noCreate}, "ftps": {"ftps", noCreate},
	"null-co": {"null-co", noCreate}, "null-aio": {"null-aio", noCreate},
	"blkdebug": {"blkdebug", noCreate}, "blkverify": {"blkverify", noCreate},
	"fat":         {"vvfat", noCreate},
	"host_device": {"host_device", openInstead}, "host_cdrom": {"host_cdrom", openInstead},
	"nbd": {"nbd", openInstead}, "nbd+tcp": {"nbd", openInstead}, "nbd+unix": {"nbd", openInstead},
	"iscsi": {"iscsi", openInstead}, "iser": {"iser", openInstead},
	"nvme": {"nvme", openInstead},
	"ssh":  {"ssh", remote}, "rbd": {"rbd", remote}, "nfs": {"nfs", remote},
	"gluster": {"gluster", remote}, "gluster+tcp": {"gluster", remote},
	"gluster+unix": {"gluster", remote}, "gluster+rdma": {"gluster", remote},
}

// Error is a file name naming a protocol qring has no driver for.
type Error struct {
	Name     string // the name as given
	Protocol string // the part before the colon
	// Driver is the driver's name in qemu-img's messages ("" when QEMU
	// knows no such protocol either).
	Driver string
	// Create: the name was an image to create (its messages differ).
	Create bool
	class  class
	reason string // why opening failed instead (openInstead)
}

func (e *Error) Error() string {
	switch {
	case e.Driver == "":
		return fmt.Sprintf("Unknown protocol '%s'", e.Protocol)
	case !e.Create:
		return e.openReason()
	case e.class == noCreate:
		return fmt.Sprintf("Protocol driver '%s' does not support image creation", e.Driver)
	case e.class == openInstead:
		return fmt.Sprintf("Protocol driver '%s' does not support image creation, and opening the image failed: %s", e.Driver, e.openReason())
	}
	return e.openReason()
}

func (e *Error) openReason() string {
	if e.reason != "" {
		return e.reason
	}
	return fmt.Sprintf("qring has no '%s' protocol driver", e.Driver)
}

// Early reports whether qemu-img refuses the name before it prints
// "Formatting ..." (create) or before it looks at the output's options
// (convert): no such protocol, or one that cannot create.
func (e *Error) Early() bool { return e.Driver == "" || e.class == noCreate }

// Path is the host file a name stands for, or an *Error. create says the
// name is an image to be created (qemu-img create, convert's output).
func Path(name string, create bool) (string, error) {
	i := strings.IndexAny(name, ":/")
	if i < 0 || name[i] != ':' || isDevice(name) {
		return name, nil
	}
	proto := name[:i]
	switch {
	case proto == "file":
		// What is left may read as a protocol name itself ("x:y"):
		// QEMU's bdrv_parse_filename_strip_prefix makes it "./x:y".
		if rest := name[i+1:]; HasPrefix(rest) {
			return "./" + rest, nil
		}
		return name[i+1:], nil
	case proto == "json" && !create:
		// An image spec in JSON: the opener reads it (qemu-img opens
		// one, as convert -n's output, but creates none).
		return name, nil
	case proto == "nbd" || proto == "nbd+tcp" || proto == "nbd+unix":
		// An NBD export: the opener connects to it (imgopen), and a
		// creation formats it (qemu-img opens it instead).
		return name, nil
	}
	e := &Error{Name: name, Protocol: proto, Create: create}
	d, ok := drivers[proto]
	if !ok {
		return "", e
	}
	e.Driver, e.class = d.name, d.class
	if proto == "host_device" || proto == "host_cdrom" {
		// The prefix is optional for these two, as "file:" is; what
		// follows must be a device.
		rest := name[i+1:]
		st, err := os.Stat(rest)
		switch {
		case err != nil:
			e.reason = fmt.Sprintf("Could not open '%s': %s", rest, errText(err))
		case st.Mode()&(os.ModeDevice|os.ModeCharDevice) == 0:
			e.reason = fmt.Sprintf("'%s' driver requires '%s' to be either a character or block device", proto, rest)
		default:
			return rest, nil
		}
	}
	return "", e
}

// IsNBD reports whether name names an NBD export (its protocol prefix is
// nbd, nbd+tcp or nbd+unix): the tools' opener connects to it.
func IsNBD(name string) bool {
	i := strings.IndexAny(name, ":/")
	if i < 0 || name[i] != ':' {
		return false
	}
	switch name[:i] {
	case "nbd", "nbd+tcp", "nbd+unix":
		return true
	}
	return false
}

// HasPrefix reports whether name starts with a protocol prefix, as
// QEMU's path_has_protocol reads it: a colon before any slash. Such a
// name is never taken relative to another file's directory.
func HasPrefix(name string) bool {
	i := strings.IndexAny(name, ":/")
	return i >= 0 && name[i] == ':'
}

// isDevice is QEMU's find_hdev_driver: a host device is one whatever
// its name (udev names hold colons).
func isDevice(name string) bool {
	if strings.HasPrefix(name, "/dev/cdrom") {
		return true
	}
	st, err := os.Stat(name)
	return err == nil && st.Mode()&(os.ModeDevice|os.ModeCharDevice) != 0
}

// errText is an error's strerror text, as QEMU prints it.
func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	s := err.Error()
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s
}
