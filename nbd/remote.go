package nbd

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The client side: a block.Device over an export of an NBD server
// (qemu-nbd, nbdkit, this package's Server), as QEMU's nbd block driver
// reaches one. See the package doc, "Client".

// ClientOptions are the settings of a connection to an export.
type ClientOptions struct {
	// ReadOnly opens the export for reading only: writes fail with
	// block.ErrReadOnly without reaching the server. A server's
	// read-only export is read-only whatever this says.
	ReadOnly bool
	// HandshakeTimeout bounds the negotiation (0: 60 s): a server that
	// stops answering before the transmission phase fails Dial instead
	// of hanging it. Requests after it have no deadline, as QEMU's.
	HandshakeTimeout time.Duration
	// TLS, if set, upgrades the connection with NBD_OPT_STARTTLS before
	// any other option (section "TLS support"); a server without it is
	// refused. The config's verification is the caller's (QEMU's
	// tls-creds-x509: the CA, the server's name).
	TLS *tls.Config
	// CloseTimeout bounds Close (0: 60 s): the requests in flight, the
	// flush of the writes not yet flushed and NBD_CMD_DISC get that
	// long, after which the connection is cut and the requests still
	// waiting fail (none is reported written). A server that stopped
	// answering would otherwise hold Close for ever, as it holds
	// requests outside Close (there is no reconnection: see Client).
	CloseTimeout time.Duration
	// NoStructured keeps to simple replies (no structured replies, so
	// no block status either): for tests, and servers that get them
	// wrong.
	NoStructured bool
}

// ServerError is an option the server refused during the handshake
// (section "Option reply types"): Msg is what qemu-img says of it,
// Server the message the server sent with it.
type ServerError struct {
	Msg    string
	Server string
}

func (e *ServerError) Error() string {
	if e.Server == "" {
		return e.Msg
	}
	return e.Msg + "\nserver reported: " + e.Server
}

// ProtocolError is a server that does not speak the protocol: a bad
// magic, a reply to no request, a chunk that leaves its request. The
// connection is closed, and every request on it fails with it.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "nbd: server protocol error: " + e.Msg }

// Dial connects to the NBD server at a and opens a.Export. A failed
// connection is an error in qemu-img's words ("Failed to connect to
// 'ADDR': REASON", "address resolution failed for HOST:PORT: ...").
func Dial(ctx context.Context, a Address, o ClientOptions) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		var dns *net.DNSError
		if errors.As(err, &dns) {
			why := dns.Err
			if dns.IsNotFound {
				why = "Name or service not known"
			}
			return nil, fmt.Errorf("address resolution failed for %s: %s", a.ShownAddr(), why)
		}
		why := err.Error()
		var errno syscall.Errno
		if errors.As(err, &errno) {
			why = errnoText(errno)
		}
		return nil, fmt.Errorf("Failed to connect to '%s': %s", a.ShownAddr(), why)
	}
	c, err := NewClient(nc, a.Export, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// errnoText is strerror's text (Go's errno strings are lower case).
func errnoText(e syscall.Errno) string {
	s := e.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// NewClient negotiates export over nc, a connection to an NBD server,
// and returns the export as a device. nc belongs to the client from
// then on (closed by Close, or here when the negotiation fails).
func NewClient(nc net.Conn, export string, o ClientOptions) (*Client, error) {
	t := o.HandshakeTimeout
	if t <= 0 {
		t = 60 * time.Second
	}
	nc.SetDeadline(time.Now().Add(t))
	h := &handshaker{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 4096), o: o, export: export}
	if err := h.run(); err != nil {
		var se *ServerError
		if errors.As(err, &se) {
			// A refused option: leave as QEMU's client does, with
			// NBD_OPT_ABORT (qemu-nbd logs a failed negotiation
			// otherwise), not waiting for its reply.
			h.sendOption(optAbort, nil)
		}
		nc.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil, errors.New("nbd: the server did not finish the handshake in time")
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("nbd: the server closed the connection during the handshake")
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := &Client{
		nc: h.nc, r: h.r, // h.nc: TLS over nc, if negotiated
		size: h.size, flags: h.flags,
		structured: h.structured, metaID: h.metaID, haveMeta: h.haveMeta,
		minBlock: h.minBlock, maxPayload: h.maxPayload,
		readOnly:     o.ReadOnly || h.flags&FlagReadOnly != 0,
		closeTimeout: cmp.Or(o.CloseTimeout, 60*time.Second),
		pending:      map[uint64]*call{}, readDone: make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
}

// handshaker runs the client's side of section "Newstyle negotiation".
type handshaker struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
	o  ClientOptions

	export     string
	noZeroes   bool
	size       int64
	flags      uint16
	structured bool
	metaID     uint32
	haveMeta   bool
	minBlock   uint32
	maxPayload uint32
}

const magicOldstyle = 0x00420281861253

func (h *handshaker) run() error {
	var b [18]byte
	if _, err := io.ReadFull(h.r, b[:16]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(b[:8]) != magicInit {
		return &ProtocolError{"not an NBD server (no NBDMAGIC)"}
	}
	switch binary.BigEndian.Uint64(b[8:16]) {
	case magicOpts:
	case magicOldstyle:
		return &ProtocolError{"the server speaks the oldstyle protocol, which is not supported"}
	default:
		return &ProtocolError{"unknown handshake magic"}
	}
	if _, err := io.ReadFull(h.r, b[:2]); err != nil {
		return err
	}
	sflags := binary.BigEndian.Uint16(b[:2])
	var cflags uint32
	fixed := sflags&flagFixedNewstyle != 0
	if fixed {
		cflags |= clientFixedNewstyle
	}
	if sflags&flagNoZeroes != 0 {
		cflags |= clientNoZeroes
		h.noZeroes = true
	}
	if err := h.send32(cflags); err != nil {
		return err
	}
	h.maxPayload = MaxPayload
	if h.o.TLS != nil {
		if !fixed {
			return &ServerError{Msg: "Server does not support STARTTLS"}
		}
		if err := h.startTLS(); err != nil {
			return err
		}
	}
	if !fixed {
		// Only NBD_OPT_EXPORT_NAME is understood without fixed newstyle.
		return h.exportName()
	}
	if !h.o.NoStructured {
		ok, err := h.simpleOption(optStructuredReply, nil)
		if err != nil {
			return err
		}
		h.structured = ok
		if ok {
			if err := h.setMeta(); err != nil {
				return err
			}
		}
	}
	return h.goOption()
}

// startTLS is NBD_OPT_STARTTLS: on its ACK, the TLS handshake, after
// which every byte goes through TLS.
func (h *handshaker) startTLS() error {
	if err := h.sendOption(optStartTLS, nil); err != nil {
		return err
	}
	typ, msg, err := h.reply(optStartTLS)
	switch {
	case err != nil:
		return err
	case typ&repErrBit != 0:
		return optRefusal(optStartTLS, typ, string(msg))
	case typ != repAck:
		return &ProtocolError{fmt.Sprintf("reply type %d to STARTTLS", typ)}
	}
	tc := tls.Client(h.nc, h.o.TLS)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake failed: %w", err)
	}
	h.nc = tc
	h.r = bufio.NewReaderSize(tc, 64<<10)
	h.w = bufio.NewWriterSize(tc, 4096)
	return nil
}

func (h *handshaker) send32(v uint32) error {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	h.w.Write(b[:])
	return h.w.Flush()
}

// sendOption writes an option request (section "Option haggling").
func (h *handshaker) sendOption(opt uint32, data []byte) error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], magicOpts)
	binary.BigEndian.PutUint32(b[8:12], opt)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(data)))
	h.w.Write(b[:])
	h.w.Write(data)
	return h.w.Flush()
}

// maxOptReply bounds an option reply's payload: the longest the spec
// lets a server send is a string (4 KiB) with a few fields.
const maxOptReply = maxString + 64

// reply reads one option reply to opt: its type and payload.
func (h *handshaker) reply(opt uint32) (typ uint32, data []byte, err error) {
	var b [20]byte
	if _, err := io.ReadFull(h.r, b[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(b[:8]) != magicRep {
		return 0, nil, &ProtocolError{"bad option reply magic"}
	}
	if got := binary.BigEndian.Uint32(b[8:12]); got != opt {
		return 0, nil, &ProtocolError{fmt.Sprintf("reply to option %d where %d was asked", got, opt)}
	}
	typ = binary.BigEndian.Uint32(b[12:16])
	n := binary.BigEndian.Uint32(b[16:20])
	if n > maxOptReply {
		return 0, nil, &ProtocolError{fmt.Sprintf("option reply of %d bytes", n)}
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(h.r, data); err != nil {
		return 0, nil, err
	}
	return typ, data, nil
}

// simpleOption sends an option without data answered by an ACK: false
// when the server does not support it.
func (h *handshaker) simpleOption(opt uint32, data []byte) (bool, error) {
	if err := h.sendOption(opt, data); err != nil {
		return false, err
	}
	typ, msg, err := h.reply(opt)
	switch {
	case err != nil:
		return false, err
	case typ == repAck:
		return true, nil
	case typ&repErrBit != 0:
		return false, nil
	}
	return false, &ProtocolError{fmt.Sprintf("reply type %d to option %d (%q)", typ, opt, msg)}
}

func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// setMeta asks for base:allocation (section "Metadata querying"); a
// server without it leaves block status unanswered (every byte data).
func (h *handshaker) setMeta() error {
	data := appendString32(nil, h.export)
	data = binary.BigEndian.AppendUint32(data, 1)
	data = appendString32(data, "base:allocation")
	if err := h.sendOption(optSetMetaContext, data); err != nil {
		return err
	}
	for {
		typ, d, err := h.reply(optSetMetaContext)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			return nil
		case typ == repMetaContext:
			if len(d) < 4 {
				return &ProtocolError{"short metadata context reply"}
			}
			if string(d[4:]) != "base:allocation" {
				return &ProtocolError{fmt.Sprintf("metadata context %q not asked for", d[4:])}
			}
			h.metaID, h.haveMeta = binary.BigEndian.Uint32(d[:4]), true
		case typ&repErrBit != 0:
			return nil // no contexts: no block status
		default:
			return &ProtocolError{fmt.Sprintf("reply type %d to SET_META_CONTEXT", typ)}
		}
	}
}

// goOption opens the export with NBD_OPT_GO, or with EXPORT_NAME when
// the server does not know GO.
func (h *handshaker) goOption() error {
	// NBD_INFO_BLOCK_SIZE asked for, as QEMU's client asks
	// (nbd_opt_info_or_go with request_sizes): a server with a minimum
	// block size may refuse a client that does not ask (section "Block
	// size constraints", NBD_REP_ERR_BLOCK_SIZE_REQD), and one that asks
	// keeps to the minimum (remote_align.go).
	data := appendString32(nil, h.export)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := h.sendOption(optGo, data); err != nil {
		return err
	}
	haveExport := false
	for {
		typ, d, err := h.reply(optGo)
		if err != nil {
			return err
		}
		switch typ {
		case repAck:
			if !haveExport {
				return &ProtocolError{"NBD_OPT_GO acknowledged without the export's size"}
			}
			if h.minBlock > 1 && h.size%int64(h.minBlock) != 0 {
				// Its tail could not be reached by aligned requests
				// (QEMU's words; it checks in either order of the two).
				return &ProtocolError{fmt.Sprintf("export size %d is not multiple of minimum block size %d", h.size, h.minBlock)}
			}
			return nil
		case repInfo:
			if len(d) < 2 {
				return &ProtocolError{"short NBD_REP_INFO"}
			}
			switch binary.BigEndian.Uint16(d[:2]) {
			case infoExport:
				if len(d) != 12 {
					return &ProtocolError{"NBD_INFO_EXPORT of the wrong length"}
				}
				if err := h.setExport(binary.BigEndian.Uint64(d[2:10]), binary.BigEndian.Uint16(d[10:12])); err != nil {
					return err
				}
				haveExport = true
			case infoBlockSize:
				if len(d) != 14 {
					return &ProtocolError{"NBD_INFO_BLOCK_SIZE of the wrong length"}
				}
				if err := h.setBlockSize(binary.BigEndian.Uint32(d[2:6]), binary.BigEndian.Uint32(d[6:10]), binary.BigEndian.Uint32(d[10:14])); err != nil {
					return err
				}
			}
			// Other information (name, description) is not needed.
		case repErrUnsup:
			return h.exportName()
		default:
			if typ&repErrBit != 0 {
				return optRefusal(optGo, typ, string(d))
			}
			return &ProtocolError{fmt.Sprintf("reply type %d to NBD_OPT_GO", typ)}
		}
	}
}

// optRefusal is a refused option in qemu-img's words
// (nbd_handle_reply_err), with the server's message.
func optRefusal(opt, typ uint32, msg string) error {
	o := fmt.Sprintf("option %d (%s)", opt, optName(opt))
	var what string
	switch typ {
	case repErrUnsup:
		what = "Server does not support " + o
	case repErrPolicy:
		what = "Denied by server for " + o
	case repErrInvalid:
		what = "Invalid parameters for " + o
	case repErrPlatform:
		what = "Server lacks support for " + o
	case repErrTLSReqd:
		what = "TLS negotiation required before " + o + "\nDid you forget a valid tls-creds?"
	case repErrUnknown:
		what = "Requested export not available"
	case repErrShutdown:
		what = "Server shutting down before " + o
	case repErrBlockSizeReq:
		what = "Server requires INFO_BLOCK_SIZE for " + o
	case repErrTooBig:
		what = "Server reports TOO_BIG for " + o
	default:
		what = "Unknown error code when asking for " + o
	}
	return &ServerError{Msg: what, Server: msg}
}

// optName is an option's name in QEMU's messages (nbd_opt_lookup).
func optName(opt uint32) string {
	switch opt {
	case optStartTLS:
		return "starttls"
	case optGo:
		return "go"
	}
	return "unknown"
}

func (h *handshaker) setExport(size uint64, flags uint16) error {
	if size > 1<<63-1 {
		return &ProtocolError{fmt.Sprintf("export size %d too large", size)}
	}
	h.size, h.flags = int64(size), flags
	return nil
}

// setBlockSize takes the server's constraints (section "Block size
// constraints"), checked as QEMU's client checks them, in its words:
// every request is then aligned to the minimum (remote_align.go), and
// READ and WRITE payloads stay within the maximum. A minimum over 64 KiB
// (the spec's bound) is refused too: a read-modify-write holds a block.
func (h *handshaker) setBlockSize(minimum, preferred, maximum uint32) error {
	switch {
	case minimum == 0 || minimum&(minimum-1) != 0:
		return &ProtocolError{fmt.Sprintf("server minimum block size %d is not a power of two", minimum)}
	case minimum > 64<<10:
		return &ProtocolError{fmt.Sprintf("server minimum block size %d is over 64 KiB", minimum)}
	case preferred == 0 || preferred&(preferred-1) != 0 || preferred < minimum:
		return &ProtocolError{fmt.Sprintf("server preferred block size %d is not valid", preferred)}
	case maximum < minimum:
		return &ProtocolError{fmt.Sprintf("server maximum block size %d is not valid", maximum)}
	}
	h.minBlock = minimum
	h.maxPayload = min(MaxPayload, maximum)
	h.maxPayload -= h.maxPayload % minimum
	return nil
}

// exportName is NBD_OPT_EXPORT_NAME: the server answers with the
// export's size and flags, or closes the connection.
func (h *handshaker) exportName() error {
	if err := h.sendOption(optExportName, []byte(h.export)); err != nil {
		return err
	}
	h.structured, h.haveMeta = false, false // negotiated, if ever, for GO only
	var b [10 + 124]byte
	n := 10
	if !h.noZeroes {
		n += 124
	}
	if _, err := io.ReadFull(h.r, b[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			return &ServerError{Msg: "Requested export not available"}
		}
		return err
	}
	return h.setExport(binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint16(b[8:10]))
}

// Client is an NBD export as a block.Device. Requests may be issued
// from many goroutines: they go out one at a time, whole, and their
// replies are matched to them by cookie as they come, in any order.
//
// A connection that ends fails every request waiting and every later
// one: there is no reconnection. QEMU's nbd driver does the same with
// its reconnect-delay at 0, the default qemu-img and qemu-io use
// (qemu-io 7.2 fails a read after qemu-nbd went, and the next one after
// it came back, with EIO); only with reconnect-delay set does it try a
// new connection and hold requests that long. That matters to a
// long-lived user riding out a server's restart (a VM), not to a qimg
// command, which stops at its first failed request anyway; such a user
// of a Client dials again. Outside Close requests have no deadline, as
// QEMU's (a server that stops answering holds them).
type Client struct {
	nc         net.Conn
	r          *bufio.Reader
	size       int64
	flags      uint16
	structured bool
	haveMeta   bool
	metaID     uint32
	minBlock   uint32
	maxPayload uint32
	readOnly   bool
	// closeTimeout is ClientOptions.CloseTimeout.
	closeTimeout time.Duration
	// dirty: a write, zeroing or trim was sent since the last flush was
	// sent; Close flushes then.
	dirty atomic.Bool

	wmu sync.Mutex // one request on the wire at a time
	// rmw orders writes against read-modify-writes when the server has
	// a minimum block size (remote_align.go): aligned writes, zeroes and
	// trims hold it shared, a read-modify-write exclusively, so that no
	// write lands in a block between its read and its write back.
	rmw sync.RWMutex

	mu      sync.Mutex
	pending map[uint64]*call
	cookie  uint64
	broken  error // set once: every request fails with it
	closed  bool
	// flushFailed: a flush failed, and so does every later one (B6).
	flushFailed bool
	readDone    chan struct{} // closed when the reader has ended
}

// Flags are the export's transmission flags (section "Transmission
// flags").
func (c *Client) Flags() uint16 { return c.flags }

// Structured reports whether structured replies were negotiated, and
// with them block status (base:allocation).
func (c *Client) Structured() (replies, blockStatus bool) { return c.structured, c.haveMeta }
