package nbd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errAbort ends a negotiation the client gave up (NBD_OPT_ABORT): not a
// protocol error.
var errAbort = errors.New("nbd: client aborted the negotiation")

// handshake sends the greeting and reads the client flags (section
// "Fixed newstyle negotiation"). Clients that do not set
// NBD_FLAG_C_FIXED_NEWSTYLE, or set flags we do not know, are refused:
// the spec asks the server to close the connection on unknown flags.
func (c *conn) handshake() error {
	var g [18]byte
	binary.BigEndian.PutUint64(g[0:], magicInit)
	binary.BigEndian.PutUint64(g[8:], magicOpts)
	binary.BigEndian.PutUint16(g[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.w.Write(g[:]); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.r, cf[:]); err != nil {
		return err
	}
	f := binary.BigEndian.Uint32(cf[:])
	if f&clientFixedNewstyle == 0 {
		return errors.New("nbd: client does not speak fixed newstyle")
	}
	if f&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return fmt.Errorf("nbd: unknown client flags 0x%x", f)
	}
	c.noZeroes = f&clientNoZeroes != 0
	return nil
}

// negotiate runs option haggling until the client picks an export
// (NBD_OPT_GO or NBD_OPT_EXPORT_NAME; then c.exp is set and nil is
// returned) or the connection must close (an error).
func (c *conn) negotiate() error {
	if err := c.handshake(); err != nil {
		return err
	}
	for range maxOptions {
		var h [16]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(h[0:]) != magicOpts {
			return errors.New("nbd: bad option magic")
		}
		opt := binary.BigEndian.Uint32(h[8:])
		n := binary.BigEndian.Uint32(h[12:])
		if n > maxOptionLen {
			// Skip what we will not read, within reason: a client
			// announcing gigabytes is not worth waiting for.
			if n > 16<<20 {
				return fmt.Errorf("nbd: option %d of %d bytes", opt, n)
			}
			if _, err := io.CopyN(io.Discard, c.r, int64(n)); err != nil {
				return err
			}
			if opt == optExportName {
				return errors.New("nbd: export name too long")
			}
			if err := c.optReply(opt, repErrTooBig, nil); err != nil {
				return err
			}
			continue
		}
		// The data is taken in as it arrives: a client that announces
		// 64 KiB and sends nothing costs nothing.
		var data bytes.Buffer
		if _, err := io.CopyN(&data, c.r, int64(n)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		done, err := c.option(opt, data.Bytes())
		if err != nil || done {
			return err
		}
	}
	return errors.New("nbd: too many options")
}

// option handles one option; done means the transmission phase begins.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	if c.srv.TLS != nil && !c.tls {
		// Section "TLS support": before STARTTLS only ABORT and STARTTLS
		// itself are allowed; EXPORT_NAME cannot be refused but by
		// closing.
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return false, errors.New("nbd: NBD_OPT_EXPORT_NAME before TLS")
		default:
			return false, c.optError(opt, repErrTLSReqd, "TLS is required")
		}
	}
	switch opt {
	case optExportName:
		return c.optExportName(data)
	case optAbort:
		// The spec says the server SHOULD acknowledge, then close.
		c.optReply(opt, repAck, nil)
		return false, errAbort
	case optList:
		if len(data) != 0 {
			return false, c.optError(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
		}
		for _, e := range c.srv.Exports {
			// The name, then the optional description (as qemu-nbd
			// sends its -D).
			b := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
			b = append(append(b, e.Name...), e.Description...)
			if err := c.optReply(opt, repServer, b); err != nil {
				return false, err
			}
		}
		return false, c.optReply(opt, repAck, nil)
	case optStartTLS:
		return false, c.optStartTLS(data)
	case optInfo, optGo:
		return c.optInfo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return false, c.optError(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		if c.structured {
			return false, c.optError(opt, repErrInvalid, "structured replies already negotiated")
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return false, c.optMeta(opt, data)
	}
	return false, c.optError(opt, repErrUnsup, fmt.Sprintf("option %d not supported", opt))
}

// optReply sends one option reply (section "Option reply types").
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], magicRep)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.w.Write(h[:])
	c.w.Write(data)
	return c.w.Flush()
}

// optError sends an error reply with a message for humans. Refusing an
// option is part of a normal negotiation (clients probe): it is only
// logged with Debugf.
func (c *conn) optError(opt, typ uint32, msg string) error {
	c.srv.debugf("nbd: %s: option %d: %s", c.nc.RemoteAddr(), opt, msg)
	return c.optReply(opt, typ, []byte(msg))
}

// export finds the export named name.
func (c *conn) export(name string) *Export {
	for _, e := range c.srv.Exports {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// optExportName is the old way to enter transmission: no way to refuse
// but closing, and the reply is the export's size and flags (section
// "Option types", NBD_OPT_EXPORT_NAME).
func (c *conn) optExportName(data []byte) (bool, error) {
	e := c.export(string(data))
	if e == nil {
		return false, fmt.Errorf("nbd: unknown export %q", data)
	}
	size, err := e.Dev.Size()
	if err != nil {
		return false, err
	}
	b := binary.BigEndian.AppendUint64(nil, uint64(size))
	b = binary.BigEndian.AppendUint16(b, e.flags(c.structured))
	if !c.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	c.w.Write(b)
	if err := c.w.Flush(); err != nil {
		return false, err
	}
	return true, c.enter(e, size)
}

// optInfo answers NBD_OPT_INFO and NBD_OPT_GO: the export's size and
// flags, its name and description when asked for, and its block sizes
// (section "Size constraints": minimum 1, preferred 4 KiB, maximum
// MaxPayload). GO then enters transmission.
func (c *conn) optInfo(opt uint32, data []byte) (bool, error) {
	name, rest, ok := takeString32(data)
	if !ok || len(rest) < 2 {
		return false, c.optError(opt, repErrInvalid, "malformed info request")
	}
	nreq := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		return false, c.optError(opt, repErrInvalid, "malformed info request list")
	}
	e := c.export(name)
	if e == nil {
		return false, c.optError(opt, repErrUnknown, fmt.Sprintf("unknown export %q", name))
	}
	size, err := e.Dev.Size()
	if err != nil {
		return false, c.optError(opt, repErrShutdown, err.Error())
	}
	var wantName, wantDesc bool
	for i := range nreq {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	info := func(b []byte) error { return c.optReply(opt, repInfo, b) }
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint16(b, e.flags(c.structured))
	if err := info(b); err != nil {
		return false, err
	}
	if wantName {
		if err := info(append(binary.BigEndian.AppendUint16(nil, infoName), e.Name...)); err != nil {
			return false, err
		}
	}
	if wantDesc && e.Description != "" {
		if err := info(append(binary.BigEndian.AppendUint16(nil, infoDescription), e.Description...)); err != nil {
			return false, err
		}
	}
	b = binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 4096)
	b = binary.BigEndian.AppendUint32(b, MaxPayload)
	if err := info(b); err != nil {
		return false, err
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt != optGo {
		return false, nil
	}
	return true, c.enter(e, size)
}

// enter fixes the export for the transmission phase. Contexts selected
// for another export do not carry over (section "Metadata querying").
func (c *conn) enter(e *Export, size int64) error {
	if c.metaExport != e.Name {
		c.meta = nil
	}
	c.exp, c.size = e, size
	return nil
}

// optMeta answers LIST_META_CONTEXT and SET_META_CONTEXT (section
// "Metadata querying"): one NBD_REP_META_CONTEXT per context selected,
// then an ACK. SET needs structured replies negotiated first and replaces
// the previous selection. LIST does not: the spec lets a server refuse
// it then (MAY), qemu-nbd answers it, and so does this server.
func (c *conn) optMeta(opt uint32, data []byte) error {
	set := opt == optSetMetaContext
	if set && !c.structured {
		return c.optError(opt, repErrInvalid, "structured replies not negotiated")
	}
	r, ok := parseMetaRequest(data)
	if !ok {
		return c.optError(opt, repErrInvalid, "malformed meta context request")
	}
	exp := c.export(r.export)
	if exp == nil {
		return c.optError(opt, repErrUnknown, fmt.Sprintf("unknown export %q", r.export))
	}
	all := exp.contexts()
	var sel []metaContext
	if !set && len(r.queries) == 0 {
		sel = all
	}
	for _, q := range r.queries {
		for _, m := range metaMatch(all, q, !set) {
			dup := false
			for _, s := range sel {
				dup = dup || s.id == m.id
			}
			if !dup {
				sel = append(sel, m)
			}
		}
	}
	if set {
		c.meta = c.meta[:0]
		c.metaExport = r.export
	}
	for _, m := range sel {
		b := binary.BigEndian.AppendUint32(nil, m.id)
		if err := c.optReply(opt, repMetaContext, append(b, m.name...)); err != nil {
			return err
		}
		if set {
			c.meta = append(c.meta, m.id)
		}
	}
	return c.optReply(opt, repAck, nil)
}

// optStartTLS upgrades the connection (section "TLS support"): ACK in
// clear, then the TLS handshake, then negotiation goes on encrypted.
func (c *conn) optStartTLS(data []byte) error {
	if c.srv.TLS == nil {
		return c.optError(optStartTLS, repErrPolicy, "TLS not configured")
	}
	if c.tls {
		return c.optError(optStartTLS, repErrInvalid, "TLS already negotiated")
	}
	if len(data) != 0 {
		return c.optError(optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
	}
	if err := c.optReply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	if c.r.Buffered() != 0 {
		return errors.New("nbd: data after NBD_OPT_STARTTLS before the TLS handshake")
	}
	tc := tls.Server(c.nc, c.srv.TLS)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc, c.tls = tc, true
	c.r = bufio.NewReaderSize(tc, negotiateBuf)
	c.w = bufio.NewWriterSize(tc, negotiateBuf)
	return nil
}
