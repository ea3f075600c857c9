package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Sizes and limits (block/vpc.c).
const (
	// FooterSize is the size of the footer (HEADER_SIZE).
	FooterSize = 512
	// DynHeaderSize is the size of the dynamic disk header, which QEMU
	// reads whole (sizeof(VHDDynDiskHeader)).
	DynHeaderSize = 1024
	// SectorSize is the VHD sector.
	SectorSize = 512
	// MaxSectors is QEMU's VHD_MAX_SECTORS: 2040 GiB.
	MaxSectors = 0xff000000
	// MaxGeometry is QEMU's VHD_MAX_GEOMETRY, 65535 x 16 x 255 sectors:
	// an image with this geometry is sized by current_size (VF4).
	MaxGeometry = 65535 * 16 * 255
	// Unallocated is a BAT entry that maps no block (VF5).
	Unallocated = 0xffffffff
	// maxTableEntries is QEMU's bound on max_table_entries
	// (INT_MAX / 4).
	maxTableEntries = 0x7fffffff / 4
)

// Disk types (the footer's type field).
const (
	TypeFixed        = 2
	TypeDynamic      = 3
	TypeDifferencing = 4
)

// Cookies.
var (
	FooterCookie = []byte("conectix")
	HeaderCookie = []byte("cxsparse")
)

// Error kinds (VF2).
var (
	ErrCorrupt     = errors.New("vhd: corrupt image")
	ErrTooLarge    = errors.New("vhd: image too large")
	ErrUnsupported = errors.New("vhd: unsupported image")
)

// Error is a rejected image: Msg is QEMU's message (VF2).
type Error struct {
	Msg string
	Err error // ErrCorrupt, ErrTooLarge or ErrUnsupported
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func corrupt(format string, a ...any) error {
	return &Error{Msg: fmt.Sprintf(format, a...), Err: ErrCorrupt}
}

// Footer is the hard disk footer (the spec's "Hard Disk Footer Format").
type Footer struct {
	Features    uint32
	Version     uint32
	DataOffset  uint64 // the dynamic header's offset
	Timestamp   uint32
	CreatorApp  [4]byte
	CreatorVer  uint32
	CreatorOS   [4]byte
	OrigSize    uint64
	CurrentSize uint64
	Cylinders   uint16
	Heads       uint8
	SecPerTrack uint8
	Type        uint32
	Checksum    uint32
	UUID        [16]byte
	SavedState  uint8
}

// HasFooterCookie reports whether b starts with "conectix".
func HasFooterCookie(b []byte) bool { return bytes.HasPrefix(b, FooterCookie) }

// Checksum is the footer's (or the dynamic header's) checksum of b: the
// ones' complement of the byte sum, with the 4 bytes at sumAt taken as
// zero (VF3).
func Checksum(b []byte, sumAt int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= sumAt && i < sumAt+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

// ParseFooter decodes the footer in b (at least FooterSize bytes): the
// cookie and the checksum are checked (VF3).
func ParseFooter(b []byte) (Footer, error) {
	var f Footer
	if len(b) < FooterSize || !HasFooterCookie(b) {
		return f, corrupt("invalid VPC image")
	}
	b = b[:FooterSize]
	be := binary.BigEndian
	f.Features = be.Uint32(b[8:])
	f.Version = be.Uint32(b[12:])
	f.DataOffset = be.Uint64(b[16:])
	f.Timestamp = be.Uint32(b[24:])
	copy(f.CreatorApp[:], b[28:32])
	f.CreatorVer = be.Uint32(b[32:])
	copy(f.CreatorOS[:], b[36:40])
	f.OrigSize = be.Uint64(b[40:])
	f.CurrentSize = be.Uint64(b[48:])
	f.Cylinders = be.Uint16(b[56:])
	f.Heads = b[58]
	f.SecPerTrack = b[59]
	f.Type = be.Uint32(b[60:])
	f.Checksum = be.Uint32(b[64:])
	copy(f.UUID[:], b[68:84])
	f.SavedState = b[84]
	if Checksum(b, 64) != f.Checksum {
		return f, corrupt("Incorrect header checksum")
	}
	return f, nil
}

// SizeCalc is how the virtual size is computed (QEMU's force_size_calc).
type SizeCalc int

const (
	SizeAuto    SizeCalc = iota // by the creator application (VF4)
	SizeCHS                     // force_size_calc=chs
	SizeCurrent                 // force_size_calc=current_size
)

// currentSizeApps are the creator applications whose current_size QEMU
// 7.2 trusts (vpc_open's table; "tap" is compared with its NUL).
var currentSizeApps = [][4]byte{{'w', 'i', 'n', ' '}, {'q', 'e', 'm', '2'}, {'d', '2', 'v', ' '}, {'C', 'T', 'X', 'S'}, {'t', 'a', 'p', 0}}

// GeometrySectors is cylinders x heads x sectors per track.
func (f Footer) GeometrySectors() int64 {
	return int64(f.Cylinders) * int64(f.Heads) * int64(f.SecPerTrack)
}

// Sectors is the virtual size in sectors as QEMU 7.2 computes it (VF4),
// or an *Error wrapping ErrTooLarge past MaxSectors.
func (f Footer) Sectors(calc SizeCalc) (int64, error) {
	n := f.GeometrySectors()
	useCHS := calc == SizeCHS
	if !useCHS {
		useCHS = true
		for _, a := range currentSizeApps {
			if f.CreatorApp == a {
				useCHS = false
			}
		}
	}
	if !useCHS || n == MaxGeometry || calc == SizeCurrent {
		n = int64(f.CurrentSize / SectorSize) // below 2^55: fits
	}
	if n > MaxSectors {
		return 0, &Error{Msg: "File too large", Err: ErrTooLarge}
	}
	return n, nil
}

// DynHeader is the dynamic disk header (the fields QEMU reads).
type DynHeader struct {
	DataOffset      uint64
	TableOffset     uint64
	HeaderVersion   uint32
	MaxTableEntries uint32
	BlockSize       uint32
	Checksum        uint32 // not checked (VF3)
}

// ParseDynHeader decodes the dynamic disk header in b (at least
// FooterSize bytes: the fields past them are not used).
func ParseDynHeader(b []byte) (DynHeader, error) {
	var h DynHeader
	if len(b) < FooterSize || !bytes.HasPrefix(b, HeaderCookie) {
		return h, corrupt("Invalid header magic")
	}
	be := binary.BigEndian
	h.DataOffset = be.Uint64(b[8:])
	h.TableOffset = be.Uint64(b[16:])
	h.HeaderVersion = be.Uint32(b[24:])
	h.MaxTableEntries = be.Uint32(b[28:])
	h.BlockSize = be.Uint32(b[32:])
	h.Checksum = be.Uint32(b[36:])
	return h, nil
}

// BitmapSize is the size of a block's sector bitmap: one bit a sector,
// in whole sectors, by QEMU's formula (bitmap_size in vpc_open), which
// truncates first: a block below 4 KiB gets none.
func BitmapSize(blockSize uint32) int64 {
	return (int64(blockSize)/(8*SectorSize) + SectorSize - 1) &^ (SectorSize - 1)
}

// Layout is a dynamic disk's geometry once CheckDynamic accepted it.
type Layout struct {
	BlockSize  int64
	BitmapSize int64
	// Entries is max_table_entries; Need is how many of them cover the
	// virtual size (at most Entries): only those map guest bytes.
	Entries, Need int64
	TableOffset   int64
	// TableEnd is the end of the BAT rounded up to a sector: where
	// QEMU's free_data_block_offset starts.
	TableEnd int64
}

// CheckDynamic checks h against the virtual size (sectors) and the
// file's length as QEMU measures it (whole sectors), in vpc_open's
// order and words, and returns the layout. The BAT it describes lies
// within the file (VF1).
func CheckDynamic(h DynHeader, sectors, fileLen int64) (Layout, error) {
	bs := h.BlockSize
	if bs < SectorSize || bs&(bs-1) != 0 {
		return Layout{}, corrupt("Invalid block size %d", bs)
	}
	l := Layout{BlockSize: int64(bs), BitmapSize: BitmapSize(bs), Entries: int64(h.MaxTableEntries)}
	if sectors*SectorSize/l.BlockSize > 0xffffffff {
		return Layout{}, corrupt("Too many blocks")
	}
	if uint64(l.Entries)*uint64(l.BlockSize) < uint64(sectors*SectorSize) {
		return Layout{}, corrupt("Page table too small")
	}
	if l.Entries > maxTableEntries {
		return Layout{}, corrupt("Max Table Entries too large (%d)", int32(h.MaxTableEntries))
	}
	l.Need = min(l.Entries, (sectors*SectorSize+l.BlockSize-1)/l.BlockSize)
	// QEMU reads the whole table (zeros past the end of the file) and
	// then refuses a table that ends past the file: refused here before
	// anything is read or allocated.
	if ReadFails(h.TableOffset, l.Entries*4) {
		return Layout{}, corrupt("Error reading pagetable")
	}
	if h.TableOffset > uint64(fileLen) {
		return Layout{}, ErrTruncated()
	}
	l.TableOffset = int64(h.TableOffset) // at most fileLen: no overflow below
	l.TableEnd = roundUp(l.TableOffset + l.Entries*4)
	if l.TableEnd > fileLen {
		return Layout{}, ErrTruncated()
	}
	return l, nil
}

// maxLength is QEMU's BDRV_MAX_LENGTH: INT64_MAX aligned down to 1 GiB.
// Its block layer fails a read that would end past it.
const maxLength = math.MaxInt64 &^ (1<<30 - 1)

// ReadFails reports whether QEMU fails to read n bytes (0 <= n < 2^32)
// at off: they end past maxLength (bdrv_check_qiov_request). Reads short
// of it but past the end of the file read zeros.
func ReadFails(off uint64, n int64) bool {
	return off > maxLength || uint64(n) > maxLength-off
}

// ErrTruncated is QEMU's refusal of an image whose BAT, or a block it
// maps, ends past the end of the file.
func ErrTruncated() error {
	return corrupt("block-vpc: free_data_block_offset points after the end of file. The image has been truncated.")
}

func roundUp(n int64) int64 { return (n + SectorSize - 1) &^ (SectorSize - 1) }

// BATEntry decodes entry i of the BAT bytes b (4 bytes an entry).
func BATEntry(b []byte, i int) uint32 { return binary.BigEndian.Uint32(b[4*i:]) }

// BlockEnd is where the block entry e maps ends in the file (its
// bitmap, then its data) (VF5).
func (l Layout) BlockEnd(e uint32) int64 {
	return int64(e)*SectorSize + l.BitmapSize + l.BlockSize
}

// DataOffset is the file offset of the byte at inBlock within the block
// entry e maps (VF5).
func (l Layout) DataOffset(e uint32, inBlock int64) int64 {
	return int64(e)*SectorSize + l.BitmapSize + inBlock
}

// SectorMapped reports whether bit i of a block's sector bitmap is set:
// the spec's bitmaps are big-endian within each byte (sector 0 is the
// most significant bit of byte 0). A reader that matches QEMU ignores it
// (VF5).
func SectorMapped(bitmap []byte, i int) bool {
	if i < 0 || i/8 >= len(bitmap) {
		return false
	}
	return bitmap[i/8]&(0x80>>(i%8)) != 0
}
