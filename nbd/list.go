package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ExportInfo is what a server says of one export while listing
// (ListExports): its name and description (NBD_OPT_LIST), size and
// transmission flags and block sizes (NBD_OPT_INFO), and its metadata
// contexts (NBD_OPT_LIST_META_CONTEXT with no query).
type ExportInfo struct {
	Name, Description string
	Size              uint64
	Flags             uint16
	HasBlockSize      bool
	MinBlock          uint32
	OptBlock          uint32
	MaxBlock          uint32
	Contexts          []string
}

// maxListReply bounds one option reply's payload a listing reads, and
// maxListed the exports and the contexts of one export it keeps (a
// server sending more is refused, not obeyed).
const (
	maxListReply = 4 + 2*maxString // NBD_REP_SERVER: a name and a description
	maxListed    = 4096
	// maxListBytes bounds the names, descriptions and contexts a listing
	// keeps in all.
	maxListBytes = 32 << 20
)

// ListExports lists the exports of the server at the other end of rw, as
// qemu-nbd -L does: fixed newstyle negotiation, NBD_OPT_LIST, then for
// each export NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT, and
// NBD_OPT_ABORT. A server that requires TLS answers with an error: this
// client speaks no TLS.
func ListExports(rw io.ReadWriter) ([]ExportInfo, error) {
	var hs [18]byte
	if _, err := io.ReadFull(rw, hs[:]); err != nil {
		return nil, fmt.Errorf("nbd: reading the greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hs[0:]) != magicInit || binary.BigEndian.Uint64(hs[8:]) != magicOpts {
		return nil, errors.New("nbd: not a newstyle NBD server")
	}
	sflags := binary.BigEndian.Uint16(hs[16:])
	if sflags&flagFixedNewstyle == 0 {
		return nil, errors.New("nbd: the server does not speak fixed newstyle negotiation")
	}
	cflags := uint32(clientFixedNewstyle)
	if sflags&flagNoZeroes != 0 {
		cflags |= clientNoZeroes
	}
	if err := binary.Write(rw, binary.BigEndian, cflags); err != nil {
		return nil, err
	}
	c := &listClient{rw: rw}
	// Structured replies first: servers list metadata contexts only
	// then (QEMU's client asks for them too).
	if err := c.send(optStructuredReply, nil); err != nil {
		return nil, err
	}
	typ, _, err := c.reply(optStructuredReply)
	c.structured = err == nil && typ == repAck
	if err != nil && typ&repErrBit == 0 {
		return nil, err
	}
	var exports []ExportInfo
	if err := c.send(optList, nil); err != nil {
		return nil, err
	}
	for {
		typ, data, err := c.reply(optList)
		if err != nil {
			return nil, err
		}
		if typ == repAck {
			break
		}
		if typ != repServer || len(data) < 4 {
			return nil, fmt.Errorf("nbd: unexpected reply %#x to NBD_OPT_LIST", typ)
		}
		n := binary.BigEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) {
			return nil, errors.New("nbd: export name past the end of its reply")
		}
		if n > maxString || len(data)-4-int(n) > maxString {
			// As qemu-nbd -L: strings are at most 4096 bytes (spec).
			return nil, errors.New("nbd: incorrect name or description length in the server's list response")
		}
		if len(exports) == maxListed {
			return nil, fmt.Errorf("nbd: more than %d exports", maxListed)
		}
		if err := c.keep(len(data)); err != nil {
			return nil, err
		}
		exports = append(exports, ExportInfo{Name: string(data[4 : 4+n]), Description: string(data[4+n:])})
	}
	for i := range exports {
		if err := c.info(&exports[i]); err != nil {
			return nil, err
		}
		if !c.structured {
			continue
		}
		if err := c.contexts(&exports[i]); err != nil {
			return nil, err
		}
	}
	if err := c.send(optAbort, nil); err != nil {
		return nil, err
	}
	c.reply(optAbort) // the server may close at once: its reply is a courtesy
	return exports, nil
}

type listClient struct {
	rw         io.ReadWriter
	structured bool  // structured replies negotiated
	kept       int64 // bytes of names, descriptions and contexts kept
}

// keep counts n more bytes kept, refusing a listing past maxListBytes.
func (c *listClient) keep(n int) error {
	c.kept += int64(n)
	if c.kept > maxListBytes {
		return fmt.Errorf("nbd: the server's listing is larger than %d MiB", maxListBytes>>20)
	}
	return nil
}

func (c *listClient) send(opt uint32, data []byte) error {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(b, magicOpts)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	_, err := c.rw.Write(b)
	return err
}

// reply reads one option reply to opt; an error reply is an error.
func (c *listClient) reply(opt uint32) (typ uint32, data []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(c.rw, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading an option reply: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != magicRep || binary.BigEndian.Uint32(h[8:]) != opt {
		return 0, nil, errors.New("nbd: malformed option reply")
	}
	typ = binary.BigEndian.Uint32(h[12:])
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxListReply {
		return 0, nil, fmt.Errorf("nbd: option reply of %d bytes", n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(c.rw, data); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading an option reply: %w", err)
	}
	if typ&repErrBit != 0 {
		msg := ""
		if len(data) > 0 {
			msg = ": " + string(data)
		}
		if typ == repErrTLSReqd {
			return typ, nil, fmt.Errorf("nbd: the server requires TLS%s", msg)
		}
		return typ, nil, fmt.Errorf("nbd: option %d refused (reply %#x)%s", opt, typ, msg)
	}
	return typ, data, nil
}

// info asks for e's size, flags and block sizes (NBD_OPT_INFO).
func (c *listClient) info(e *ExportInfo) error {
	req := make([]byte, 4+len(e.Name)+2+2)
	binary.BigEndian.PutUint32(req, uint32(len(e.Name)))
	copy(req[4:], e.Name)
	binary.BigEndian.PutUint16(req[4+len(e.Name):], 1)
	binary.BigEndian.PutUint16(req[6+len(e.Name):], infoBlockSize)
	if err := c.send(optInfo, req); err != nil {
		return err
	}
	for {
		typ, data, err := c.reply(optInfo)
		if err != nil {
			return err
		}
		if typ == repAck {
			return nil
		}
		if typ != repInfo || len(data) < 2 {
			continue // nothing this listing reads
		}
		switch binary.BigEndian.Uint16(data) {
		case infoExport:
			if len(data) >= 12 {
				e.Size = binary.BigEndian.Uint64(data[2:])
				e.Flags = binary.BigEndian.Uint16(data[10:])
			}
		case infoBlockSize:
			if len(data) >= 14 {
				e.HasBlockSize = true
				e.MinBlock = binary.BigEndian.Uint32(data[2:])
				e.OptBlock = binary.BigEndian.Uint32(data[6:])
				e.MaxBlock = binary.BigEndian.Uint32(data[10:])
			}
		}
	}
}

// contexts lists e's metadata contexts (NBD_OPT_LIST_META_CONTEXT with
// no query: all of them).
func (c *listClient) contexts(e *ExportInfo) error {
	req := make([]byte, 4+len(e.Name)+4)
	binary.BigEndian.PutUint32(req, uint32(len(e.Name)))
	copy(req[4:], e.Name)
	if err := c.send(optListMetaContext, req); err != nil {
		return err
	}
	for {
		typ, data, err := c.reply(optListMetaContext)
		if err != nil {
			if typ == repErrUnsup {
				return nil // no structured replies: no contexts
			}
			return err
		}
		if typ == repAck {
			return nil
		}
		if typ == repMetaContext && len(data) >= 4 {
			if len(data)-4 > maxString {
				return errors.New("nbd: metadata context name longer than 4096 bytes")
			}
			if len(e.Contexts) == maxListed {
				return fmt.Errorf("nbd: more than %d metadata contexts", maxListed)
			}
			if err := c.keep(len(data)); err != nil {
				return err
			}
			e.Contexts = append(e.Contexts, string(data[4:]))
		}
	}
}
