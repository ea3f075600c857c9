package nbd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// optData is the data of the option being negotiated, read from the
// connection field by field as its handler asks for it, as qemu-nbd
// reads it (nbd_opt_read): no option is held whole, so one of many
// metadata queries costs no more memory than a short one, and the
// server answers an option of any length up to MaxPayload, as qemu-nbd
// does (NBD_MAX_BUFFER_SIZE), rather than NBD_REP_ERR_TOO_BIG.
type optData struct {
	r    *bufio.Reader
	left uint32 // bytes of the option not read yet
	buf  []byte // for strings, reused
}

// optInvalid is an option whose data does not parse: the rest of it is
// dropped and the client gets NBD_REP_ERR_INVALID with the message,
// and negotiation goes on. Any other error from an optData method is
// the connection's (a read that failed) and ends it.
type optInvalid struct{ msg string }

func (e *optInvalid) Error() string { return e.msg }

func invalidf(format string, a ...any) error { return &optInvalid{fmt.Sprintf(format, a...)} }

// read fills b from the option's data; too little data left is
// optInvalid ("Inconsistent lengths", section "Option types": the
// server MUST fail such a request with NBD_REP_ERR_INVALID).
func (d *optData) read(b []byte) error {
	if uint64(len(b)) > uint64(d.left) {
		return invalidf("option data too short (%d bytes left, %d more wanted)", d.left, len(b))
	}
	d.left -= uint32(len(b))
	if _, err := io.ReadFull(d.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

func (d *optData) u16() (uint16, error) {
	var b [2]byte
	err := d.read(b[:])
	return binary.BigEndian.Uint16(b[:]), err
}

func (d *optData) u32() (uint32, error) {
	var b [4]byte
	err := d.read(b[:])
	return binary.BigEndian.Uint32(b[:]), err
}

// skip drops n bytes of the data (n more than is left is optInvalid).
func (d *optData) skip(n uint32) error {
	if n > d.left {
		return invalidf("option data too short (%d bytes left, %d more wanted)", d.left, n)
	}
	d.left -= n
	_, err := io.CopyN(io.Discard, d.r, int64(n))
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// drop discards what is left of the option.
func (d *optData) drop() error { return d.skip(d.left) }

// text reads n bytes of string (section "Conventions": no NUL in a
// string; qemu-nbd refuses one with NBD_REP_ERR_INVALID too), n at most
// maxString.
func (d *optData) text(n uint32) (string, error) {
	if cap(d.buf) < int(n) {
		d.buf = make([]byte, n, maxString)
	}
	b := d.buf[:n]
	if err := d.read(b); err != nil {
		return "", err
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "", invalidf("NUL in a string")
	}
	return string(b), nil
}

// name reads a 32-bit length and that much string: an export name,
// which is at most maxString bytes (longer is optInvalid, as qemu-nbd's
// nbd_opt_read_name).
func (d *optData) name() (string, error) {
	n, err := d.u32()
	if err != nil {
		return "", err
	}
	if n > maxString {
		return "", invalidf("name of %d bytes (at most %d)", n, maxString)
	}
	return d.text(n)
}

// empty checks that the whole option was read: data left over is
// optInvalid.
func (d *optData) empty(what string) error {
	if d.left != 0 {
		return invalidf("%s: %d bytes of unexpected data", what, d.left)
	}
	return nil
}
