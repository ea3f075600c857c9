package nbd

import (
	"encoding/binary"
	"fmt"
)

// request is one transmission-phase request (section "Request message"):
// 28 bytes of header, then Length bytes of payload for NBD_CMD_WRITE.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	len    uint32
}

const requestSize = 28

// errBadMagic is a header that is not a request: the stream is lost.
type errBadMagic uint32

func (e errBadMagic) Error() string { return fmt.Sprintf("nbd: bad request magic 0x%08x", uint32(e)) }

// parseRequest decodes a header; a wrong magic is an error (the
// connection cannot be resynchronised and closes).
func parseRequest(b *[requestSize]byte) (request, error) {
	if m := binary.BigEndian.Uint32(b[0:]); m != magicRequest {
		return request{}, errBadMagic(m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		cookie: binary.BigEndian.Uint64(b[8:]),
		off:    binary.BigEndian.Uint64(b[16:]),
		len:    binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// cmdName names a request type for logs.
func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("CMD_%d", t)
}

// validFlags are the command flags each request type accepts; FUA is
// accepted everywhere (it is meaningless but harmless on reads), as
// qemu-nbd does. DF needs structured replies; the caller checks that.
func validFlags(t uint16) uint16 {
	f := uint16(cmdFlagFUA)
	switch t {
	case cmdRead:
		f |= cmdFlagDF
	case cmdWriteZeroes:
		f |= cmdFlagNoHole | cmdFlagFastZero
	case cmdBlockStatus:
		f |= cmdFlagReqOne
	}
	return f
}

// check validates a request against the export before any device call
// (sections "Request types" and "Error values"): the type and flags must
// be known, writes need a writable export (EPERM), the range must lie
// inside the export (ENOSPC for WRITE and WRITE_ZEROES, EINVAL for the
// rest: the spec's SHOULD for each, doc.go "Errors"), and payloads (and
// CACHE's range, as qemu-nbd) must fit MaxPayload (EINVAL, the spec's
// "Size constraints" answer for a request over the maximum).
func (c *conn) check(r *request) error {
	switch r.typ {
	case cmdRead, cmdWrite, cmdFlush, cmdTrim, cmdCache, cmdWriteZeroes, cmdBlockStatus:
	default:
		return einval(fmt.Sprintf("unknown command %d", r.typ))
	}
	if r.flags&^validFlags(r.typ) != 0 {
		return einval(fmt.Sprintf("%s: unsupported flags 0x%x", cmdName(r.typ), r.flags))
	}
	if r.flags&cmdFlagDF != 0 && !c.structured {
		return einval("NBD_CMD_FLAG_DF without structured replies")
	}
	write := r.typ == cmdWrite || r.typ == cmdWriteZeroes || r.typ == cmdTrim
	if write && c.exp.readOnly() {
		return &reqError{errPerm, cmdName(r.typ) + " on a read-only export"}
	}
	if (r.typ == cmdRead || r.typ == cmdWrite || r.typ == cmdCache) && r.len > MaxPayload {
		// CACHE too, as qemu-nbd 7.2 (nbd_co_receive_request).
		return einval(fmt.Sprintf("%s of %d bytes: larger than %d", cmdName(r.typ), r.len, MaxPayload))
	}
	// FLUSH's offset and length are reserved, zero from a client that
	// follows the spec; a flush covers the whole export whatever they
	// say, but a range that leaves the export is EINVAL, as qemu-nbd
	// 7.2 checks every request's range (nbd_co_receive_request).
	if r.off > uint64(c.size) || uint64(r.len) > uint64(c.size)-r.off {
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			return &reqError{errNoSpc, fmt.Sprintf("%s [%d, +%d) past the end (%d)", cmdName(r.typ), r.off, r.len, c.size)}
		}
		return einval(fmt.Sprintf("%s [%d, +%d) past the end (%d)", cmdName(r.typ), r.off, r.len, c.size))
	}
	if r.typ == cmdBlockStatus {
		if r.len == 0 {
			return einval("BLOCK_STATUS of length 0")
		}
		if len(c.meta) == 0 {
			return einval("BLOCK_STATUS without a metadata context")
		}
	}
	return nil
}
