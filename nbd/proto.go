package nbd

// Wire constants of the NBD protocol, named as in the spec
// (NetworkBlockDevice/nbd, doc/proto.md). All integers on the wire are
// big-endian ("network byte order", section "Conventions").

// Section "Newstyle negotiation": the server's greeting.
const (
	magicInit    = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpts    = 0x49484156454F5054 // "IHAVEOPT"
	magicRep     = 0x0003e889045565a9 // option reply magic
	magicRequest = 0x25609513         // section "Request message"
	magicSimple  = 0x67446698         // section "Simple reply message"
	magicStruct  = 0x668e33ef         // section "Structured reply chunk message"
)

// Section "Handshake flags" (server) and "Client flags".
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Section "Transmission flags".
const (
	FlagHasFlags = 1 << iota // bit 0
	FlagReadOnly
	FlagSendFlush
	FlagSendFUA
	FlagRotational
	FlagSendTrim
	FlagSendWriteZeroes
	FlagSendDF
	FlagCanMultiConn
	FlagSendResize
	FlagSendCache
	FlagSendFastZero // bit 11
)

// Section "Option types".
const (
	optExportName = iota + 1 // 1
	optAbort
	optList
	optPeekExport
	optStartTLS
	optInfo
	optGo
	optStructuredReply
	optListMetaContext
	optSetMetaContext // 10
)

// Section "Option reply types".
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrBit          = 1 << 31
	repErrUnsup        = repErrBit | 1
	repErrPolicy       = repErrBit | 2
	repErrInvalid      = repErrBit | 3
	repErrPlatform     = repErrBit | 4
	repErrTLSReqd      = repErrBit | 5
	repErrUnknown      = repErrBit | 6
	repErrShutdown     = repErrBit | 7
	repErrBlockSizeReq = repErrBit | 8
	repErrTooBig       = repErrBit | 9
)

// Section "Option reply types", NBD_REP_INFO: the information types.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Section "Request types".
const (
	cmdRead = iota // 0
	cmdWrite
	cmdDisc
	cmdFlush
	cmdTrim
	cmdCache
	cmdWriteZeroes
	cmdBlockStatus // 7
)

// Section "Command flags".
const (
	cmdFlagFUA = 1 << iota // bit 0
	cmdFlagNoHole
	cmdFlagDF
	cmdFlagReqOne
	cmdFlagFastZero // bit 4
)

// Section "Structured reply types".
const (
	replyFlagDone = 1 << 0

	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyError       = 1<<15 | 1
	replyErrorOffset = 1<<15 | 2
)

// Section "Error values".
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Section "Metadata querying" and "`base:allocation` metadata context".
const (
	StateHole = 1 << 0
	StateZero = 1 << 1
)

// Limits of this server.
const (
	// MaxPayload is the largest READ or WRITE payload accepted (what
	// qemu-nbd accepts: 32 MiB), advertised as the maximum block size
	// (section "Size constraints").
	MaxPayload = 32 << 20
	// maxOptions bounds how many options a client may send before the
	// transmission phase, so a client cannot keep a connection in
	// negotiation forever.
	maxOptions = 1024
	// maxString is the longest string the spec allows (section
	// "Conventions").
	maxString = 4096
)
