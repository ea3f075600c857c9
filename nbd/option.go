package nbd

import (
	"bufio"
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
// "Fixed newstyle negotiation"). Clients that set flags we do not know
// are refused: the spec asks the server to close the connection on
// unknown flags.
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
	// A client without NBD_FLAG_C_FIXED_NEWSTYLE speaks plain newstyle:
	// NBD_OPT_EXPORT_NAME only (qemu-nbd serves it so; the spec lets a
	// server).
	c.plainNewstyle = f&clientFixedNewstyle == 0
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
		if n > MaxPayload {
			// As qemu-nbd (NBD_MAX_BUFFER_SIZE): a client announcing
			// more is not worth reading.
			return fmt.Errorf("nbd: option %d of %d bytes", opt, n)
		}
		// The data is read as the option's handler parses it, so a
		// client that announces 32 MiB and sends nothing costs nothing.
		d := &optData{r: c.r, left: n}
		done, err := c.option(opt, d)
		var inv *optInvalid
		if errors.As(err, &inv) {
			err = c.optInvalid(opt, d, inv.msg)
		}
		if err != nil || done {
			return err
		}
		if d.left != 0 {
			// Every handler reads its option whole or answers it
			// with optInvalid.
			return fmt.Errorf("nbd: option %d: %d bytes left unread", opt, d.left)
		}
	}
	return errors.New("nbd: too many options")
}

// option handles one option; done means the transmission phase begins.
// The handler reads the option's data whole before it replies (the rest
// of it dropped), and an optInvalid error is answered by negotiate.
func (c *conn) option(opt uint32, d *optData) (done bool, err error) {
	if c.plainNewstyle && opt != optExportName {
		// Such a client cannot be answered an error: it expects none
		// (qemu-nbd closes too).
		return false, fmt.Errorf("nbd: option %d from a client without fixed newstyle negotiation", opt)
	}
	if c.srv.TLS != nil && !c.tls {
		// Section "TLS support": before STARTTLS only ABORT and STARTTLS
		// itself are allowed; EXPORT_NAME cannot be refused but by
		// closing.
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return false, errors.New("nbd: NBD_OPT_EXPORT_NAME before TLS")
		default:
			return false, c.optDrop(opt, d, repErrTLSReqd, "TLS is required")
		}
	}
	switch opt {
	case optExportName:
		return c.optExportName(d)
	case optAbort:
		// The spec says the server MUST acknowledge (and SHOULD ignore
		// any data), then close.
		c.optReply(opt, repAck, nil)
		return false, errAbort
	case optList:
		if err := d.empty("NBD_OPT_LIST"); err != nil {
			return false, err
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
		if err := d.empty("NBD_OPT_STARTTLS"); err != nil {
			return false, err
		}
		return false, c.optStartTLS()
	case optInfo, optGo:
		return c.optInfo(opt, d)
	case optStructuredReply:
		if err := d.empty("NBD_OPT_STRUCTURED_REPLY"); err != nil {
			return false, err
		}
		if c.structured {
			return false, c.optError(opt, repErrInvalid, "structured replies already negotiated")
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return false, c.optMeta(opt, d)
	}
	return false, c.optDrop(opt, d, repErrUnsup, fmt.Sprintf("option %d not supported", opt))
}

// optDrop drops the rest of the option's data and sends an error reply
// (qemu-nbd's nbd_opt_drop).
func (c *conn) optDrop(opt uint32, d *optData, typ uint32, msg string) error {
	if err := d.drop(); err != nil {
		return err
	}
	return c.optError(opt, typ, msg)
}

// optInvalid answers an option whose data does not parse: the rest is
// dropped, the reply is NBD_REP_ERR_INVALID.
func (c *conn) optInvalid(opt uint32, d *optData, msg string) error {
	return c.optDrop(opt, d, repErrInvalid, msg)
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
	if len(msg) > maxString {
		msg = msg[:maxString] // the spec's bound on a string
	}
	return c.optReply(opt, typ, []byte(msg))
}

// saneName is a client's export name as an error message shows it: at
// most 80 bytes and "...", as qemu-nbd's nbd_sanitize_name.
func saneName(name string) string {
	if len(name) >= 80 {
		return name[:80] + "..."
	}
	return name
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
func (c *conn) optExportName(d *optData) (bool, error) {
	if d.left > maxString {
		return false, fmt.Errorf("nbd: export name of %d bytes", d.left)
	}
	b := make([]byte, d.left)
	if err := d.read(b); err != nil {
		return false, err
	}
	e := c.export(string(b))
	if e == nil {
		return false, fmt.Errorf("nbd: unknown export %q", b)
	}
	size, err := e.Dev.Size()
	if err != nil {
		return false, err
	}
	b = binary.BigEndian.AppendUint64(b[:0], uint64(size))
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

// optInfo answers NBD_OPT_INFO and NBD_OPT_GO as qemu-nbd 7.2 does
// (nbd_negotiate_handle_info), in its order: the export's name when
// asked for, its description whenever it has one (qemu-nbd sends -D
// unasked; the spec lets a server send any information), its block
// sizes (section "Size constraints": minimum 1 (Export.MinBlock), preferred 4 KiB,
// maximum MaxPayload), then its size and flags. GO then enters
// transmission.
func (c *conn) optInfo(opt uint32, d *optData) (bool, error) {
	name, err := d.name()
	if err != nil {
		return false, err
	}
	nreq, err := d.u16()
	if err != nil {
		return false, err
	}
	var wantName, wantBlockSize bool
	for range nreq {
		r, err := d.u16()
		if err != nil {
			return false, err
		}
		wantName = wantName || r == infoName
		wantBlockSize = wantBlockSize || r == infoBlockSize
	}
	if err := d.empty("info request"); err != nil {
		return false, err
	}
	e := c.export(name)
	if e == nil {
		return false, c.optError(opt, repErrUnknown, fmt.Sprintf("unknown export %q", saneName(name)))
	}
	size, err := e.Dev.Size()
	if err != nil {
		return false, c.optError(opt, repErrShutdown, err.Error())
	}
	info := func(b []byte) error { return c.optReply(opt, repInfo, b) }
	if wantName {
		if err := info(append(binary.BigEndian.AppendUint16(nil, infoName), e.Name...)); err != nil {
			return false, err
		}
	}
	if e.Description != "" {
		if err := info(append(binary.BigEndian.AppendUint16(nil, infoDescription), e.Description...)); err != nil {
			return false, err
		}
	}
	// The minimum only for a client that asked for it or only asks
	// (NBD_OPT_INFO): one that did not ask may send any alignment, which
	// the export takes (Export.MinBlock), as qemu-nbd advertises it.
	minBlock := max(e.MinBlock, 1)
	if opt == optGo && !wantBlockSize {
		minBlock = 1
	}
	b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, minBlock)
	b = binary.BigEndian.AppendUint32(b, max(e.MinBlock, 4096))
	b = binary.BigEndian.AppendUint32(b, MaxPayload)
	if err := info(b); err != nil {
		return false, err
	}
	b = binary.BigEndian.AppendUint16(b[:0], infoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint16(b, e.flags(c.structured))
	if err := info(b); err != nil {
		return false, err
	}
	if opt == optInfo && !wantBlockSize && e.MinBlock > 1 {
		// As qemu-nbd, after the information: a client that does not
		// ask for the block sizes of an export with a minimum must ask
		// (NBD_OPT_GO gets a minimum of 1 instead, above).
		return false, c.optError(opt, repErrBlockSizeReq, "request NBD_INFO_BLOCK_SIZE to use this export")
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
// "Metadata querying") as qemu-nbd 7.2 does
// (nbd_negotiate_meta_queries): one NBD_REP_META_CONTEXT per context
// selected, in the server's order (base:allocation,
// qemu:allocation-depth, the dirty bitmap) whatever the order and
// repetitions of the queries, then an ACK. LIST's replies carry context
// id 0 (the spec: reserved, SHOULD be zero). A query longer than a
// string may be (maxString) selects nothing and is skipped, as by
// qemu-nbd; a NUL in a query or the export name, or data past the last
// query, is NBD_REP_ERR_INVALID (qemu-nbd 7.2 takes such trailing data
// for the start of the next option, and aborts on its assertion).
//
// SET needs structured replies negotiated first and replaces the
// previous selection, also when it fails (the spec: "including when
// this command fails"; qemu-nbd clears it first too). LIST does not:
// the spec lets a server refuse it then (MAY), qemu-nbd answers it, and
// so does this server.
func (c *conn) optMeta(opt uint32, d *optData) error {
	set := opt == optSetMetaContext
	if set && !c.structured {
		return invalidf("structured replies not negotiated")
	}
	if set {
		c.meta, c.metaExport = c.meta[:0], ""
	}
	name, err := d.name()
	if err != nil {
		return err
	}
	exp := c.export(name)
	if exp == nil {
		return c.optDrop(opt, d, repErrUnknown, fmt.Sprintf("unknown export %q", saneName(name)))
	}
	all := exp.contexts()
	chosen := make([]bool, len(all))
	n, err := d.u32()
	if err != nil {
		return err
	}
	if !set && n == 0 {
		for i := range chosen {
			chosen[i] = true
		}
	}
	for range n {
		qn, err := d.u32()
		if err != nil {
			return err
		}
		if qn > maxString {
			if err := d.skip(qn); err != nil {
				return err
			}
			continue
		}
		q, err := d.text(qn)
		if err != nil {
			return err
		}
		metaMatch(all, q, !set, chosen)
	}
	if err := d.empty("meta context request"); err != nil {
		return err
	}
	for i, m := range all {
		if !chosen[i] {
			continue
		}
		id := m.id
		if !set {
			id = 0
		}
		b := binary.BigEndian.AppendUint32(nil, id)
		if err := c.optReply(opt, repMetaContext, append(b, m.name...)); err != nil {
			return err
		}
		if set {
			c.meta = append(c.meta, m.id)
		}
	}
	if set {
		c.metaExport = name
	}
	return c.optReply(opt, repAck, nil)
}

// optStartTLS upgrades the connection (section "TLS support"): ACK in
// clear, then the TLS handshake, then negotiation goes on encrypted.
func (c *conn) optStartTLS() error {
	if c.srv.TLS == nil {
		return c.optError(optStartTLS, repErrPolicy, "TLS not configured")
	}
	if c.tls {
		return c.optError(optStartTLS, repErrInvalid, "TLS already negotiated")
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
