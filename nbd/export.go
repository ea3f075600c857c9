package nbd

import "github.com/qring/qring/block"

// Export is one device the server offers under a name.
type Export struct {
	// Name is what a client asks for in NBD_OPT_GO / EXPORT_NAME ("" is
	// the default export).
	Name string
	// Description, if not empty, is sent as NBD_INFO_DESCRIPTION in
	// every NBD_OPT_INFO and GO reply, asked for or not (as qemu-nbd
	// sends its -D), and after the name in NBD_OPT_LIST's reply.
	Description string
	// Dev is the device; it must be safe for concurrent use.
	Dev block.Device
	// ReadOnly refuses writes with EPERM and advertises
	// NBD_FLAG_READ_ONLY. A Dev with a ReadOnly() bool method that
	// reports true (a *qcow2.Image opened read-only) is exported so
	// whatever this says.
	ReadOnly bool
	// Status reports allocation for READ holes, BLOCK_STATUS and the
	// metadata contexts. Nil means Dev if Dev is a StatusSource, else
	// everything reads as allocated data at depth 1: for a *qcow2.Image
	// give nbdqcow2.Status{Image: im}, which reports its holes, zeros
	// and backing layers.
	Status StatusSource
	// AllocationDepth offers the metadata context
	// "qemu:allocation-depth" (qemu-nbd -A, and QEMU's block-export-add
	// allocation-depth): the layer of the backing chain that decides
	// each range's contents (Extent.Depth). Off, as in QEMU, a query
	// for it selects nothing.
	AllocationDepth bool
	// Bitmaps offers, for each, the metadata context
	// "qemu:dirty-bitmap:"+Name (qemu-nbd -B, repeatable): a persistent
	// dirty bitmap of the image, flag 1 where dirty. Their context ids
	// are qemu-nbd's (2 on, in this order); past MaxBitmaps, and
	// without a Source, a bitmap is not offered.
	Bitmaps []Bitmap
	// Unmap lets TRIM discard (qemu-nbd's --discard=unmap), and
	// DetectUnmap unmap; without it TRIM succeeds without doing
	// anything, as qemu-nbd's --discard=ignore. WRITE_ZEROES without
	// NO_HOLE may punch holes either way, as qemu-nbd 7.2's.
	Unmap bool
	// DetectZeroes turns WRITE requests whose payload is all zeros into
	// WRITE_ZEROES (qemu's detect-zeroes).
	DetectZeroes DetectZeroes
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: the device is shared
	// by every connection and its Flush covers them all.
	MultiConn bool
	// WriteThrough flushes every WRITE and WRITE_ZEROES before its reply,
	// as if the client had set NBD_CMD_FLAG_FUA: qemu's
	// cache=writethrough and cache=directsync, whose block backend adds
	// BDRV_REQ_FUA to every write (blk_co_pwritev_part), so that a write
	// is durable once acknowledged, without NBD_CMD_FLUSH.
	WriteThrough bool
	// MinBlock is the minimum block size the export advertises (0: 1):
	// qemu-nbd advertises 512 for a raw image whose format it probed,
	// whose first sector it protects (QEMU's raw driver aligns its
	// requests to sectors then). Requests are not refused for it.
	MinBlock uint32
}

// DetectZeroes is qemu's detect-zeroes setting.
type DetectZeroes uint8

const (
	DetectOff   DetectZeroes = iota // write zero payloads as data
	DetectOn                        // zero them without unmapping
	DetectUnmap                     // zero them, unmapping when Unmap
)

// Extent is the state of a prefix of a queried range.
type Extent struct {
	// Len is the length of the run, > 0.
	Len int64
	// Hole: not backed by data anywhere in the chain (NBD_STATE_HOLE).
	Hole bool
	// Zero: reads as zeros (NBD_STATE_ZERO).
	Zero bool
	// Depth is the layer of the backing chain that decides the contents:
	// 0 none (unallocated throughout), 1 the image itself, 2 and up its
	// backing files ("qemu:allocation-depth").
	Depth int
	// Dirty: bit i set in the export's Bitmaps[i] (its metadata
	// context; conn.extent fills in the selected ones).
	Dirty uint64
}

// Bitmap is a dirty bitmap an export offers (Export.Bitmaps).
type Bitmap struct {
	Name   string
	Source DirtySource
}

// MaxBitmaps bounds the bitmaps an export offers (Extent.Dirty's bits).
const MaxBitmaps = 64

// StatusSource is an optional capability of an export: it describes
// allocation. Extent returns the state of a prefix of [off, off+n), off
// and n inside the device.
type StatusSource interface {
	Extent(off, n int64) (Extent, error)
}

// DirtySource reports a dirty bitmap: whether off is dirty, and the
// length of the run of that state from off, at most n (off and n inside
// the device).
type DirtySource interface {
	DirtyRun(off, n int64) (dirty bool, length int64, err error)
}

// Discarder is an optional capability of a device: Discard deallocates
// [off, off+n) (TRIM). It is block's (block.Discarder).
type Discarder = block.Discarder

// transmission flags of e for a connection that negotiated structured
// replies or not (section "Transmission flags").
func (e *Export) flags(structured bool) uint16 {
	f := uint16(FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache)
	if structured {
		f |= FlagSendDF
	}
	if e.readOnly() {
		f |= FlagReadOnly
	} else {
		f |= FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	}
	if e.MultiConn {
		f |= FlagCanMultiConn
	}
	if e.Dev.Caps().Media == block.MediaHDD {
		f |= FlagRotational
	}
	return f
}

// readOnly: the export refuses writes (ReadOnly, or a device that says
// it is read-only, which would fail every write).
func (e *Export) readOnly() bool {
	if e.ReadOnly {
		return true
	}
	ro, ok := e.Dev.(interface{ ReadOnly() bool })
	return ok && ro.ReadOnly()
}

// status returns the export's StatusSource, or nil.
func (e *Export) status() StatusSource {
	if e.Status != nil {
		return e.Status
	}
	if s, ok := e.Dev.(StatusSource); ok {
		return s
	}
	return nil
}
