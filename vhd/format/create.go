package format

import (
	"encoding/binary"
	"time"
)

// Values QEMU 7.2 writes into a new image (vpc_co_create).
const (
	// NewBlockSize is the block size of a new dynamic disk (2 MiB).
	NewBlockSize = 0x200000
	// NewTableOffset is where a new dynamic disk's BAT starts: after the
	// footer copy and the dynamic header.
	NewTableOffset = 3 * SectorSize
	// timestampBase is 2000-01-01 00:00:00 UTC, the footer's epoch.
	timestampBase = 946684800
	// maxCHS are the largest cylinders, heads and sectors per track
	// (VHD_CHS_MAX_C, _H, _S): the geometry of an image sized by
	// current_size (VF4).
	maxCylinders = 65535
	maxHeads     = 16
	maxSPT       = 255
)

// Geometry is a disk's CHS geometry.
type Geometry struct {
	Cylinders   uint16
	Heads       uint8
	SecPerTrack uint8
}

// Sectors is cylinders x heads x sectors per track.
func (g Geometry) Sectors() int64 {
	return int64(g.Cylinders) * int64(g.Heads) * int64(g.SecPerTrack)
}

// chsFor is the geometry the VHD specification's algorithm gives a disk
// of n sectors (QEMU's calculate_geometry, with its 255-sector tracks
// past the spec's largest 63-sector geometry). It may round n down.
func chsFor(n int64) Geometry {
	n = min(n, MaxGeometry)
	var spt, heads int64
	var ch int64 // cylinders x heads
	if n >= 65535*16*63 {
		spt, heads = 255, 16
		ch = n / spt
	} else {
		spt = 17
		ch = n / spt
		heads = max((ch+1023)/1024, 4)
		if ch >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			ch = n / spt
		}
		if ch >= heads*1024 {
			spt, heads = 63, 16
			ch = n / spt
		}
	}
	return Geometry{Cylinders: uint16(ch / heads), Heads: uint8(heads), SecPerTrack: uint8(spt)}
}

// Plan is the virtual size and geometry of a new image (NewPlan).
type Plan struct {
	Size     int64 // bytes, a multiple of SectorSize
	Geometry Geometry
}

// NewPlan is the size and geometry QEMU 7.2 gives a new image asked for
// size bytes (vpc_co_create_opts and calculate_rounded_image_size): the
// size rounded up to a sector, then, unless forceSize, up to the first
// geometry that holds it. A size no geometry holds, or forceSize, gets
// the largest geometry and keeps its own size (VF4: such an image is
// sized by current_size), up to MaxSectors; past that it is an *Error
// wrapping ErrTooLarge.
func NewPlan(size int64, forceSize bool) (Plan, error) {
	// Checked before the rounding, which would take a negative size
	// above -SectorSize to 0, and a size near the int64 limit past it to
	// a negative one that no geometry loop sees (a disk of 0 bytes and
	// no error); every size past MaxSectors is too large below anyway.
	if size < 0 {
		return Plan{}, &Error{Msg: "Invalid size", Err: ErrTooLarge}
	}
	if size > MaxSectors*SectorSize {
		return Plan{}, &Error{Msg: "Disk size is too large, max size is 2040 GiB", Err: ErrTooLarge}
	}
	size = (size + SectorSize - 1) &^ (SectorSize - 1)
	var g Geometry
	if forceSize {
		g = Geometry{maxCylinders, maxHeads, maxSPT}
	} else {
		n := min(int64(MaxGeometry), size/SectorSize)
		for i := int64(0); n > g.Sectors(); i++ {
			g = chsFor(n + i)
		}
	}
	if g.Sectors() != MaxGeometry {
		return Plan{Size: g.Sectors() * SectorSize, Geometry: g}, nil
	}
	if size/SectorSize > MaxSectors {
		return Plan{}, &Error{Msg: "Disk size is too large, max size is 2040 GiB", Err: ErrTooLarge}
	}
	return Plan{Size: size, Geometry: g}, nil
}

// NewFooter is the footer QEMU 7.2 writes into a new image of plan p:
// creator "qemu" ("qem2" when forceSize, so that readers size it by
// current_size, VF4) on "Wi2k", version 5.3, created at now, with id.
func NewFooter(p Plan, dynamic, forceSize bool, now time.Time, id [16]byte) Footer {
	f := Footer{
		Features:    2,
		Version:     0x00010000,
		DataOffset:  0xffffffffffffffff,
		Timestamp:   uint32(now.Unix() - timestampBase),
		CreatorApp:  [4]byte{'q', 'e', 'm', 'u'},
		CreatorVer:  0x00050003,
		CreatorOS:   [4]byte{'W', 'i', '2', 'k'},
		OrigSize:    uint64(p.Size),
		CurrentSize: uint64(p.Size),
		Cylinders:   p.Geometry.Cylinders,
		Heads:       p.Geometry.Heads,
		SecPerTrack: p.Geometry.SecPerTrack,
		Type:        TypeFixed,
		UUID:        id,
	}
	if forceSize {
		f.CreatorApp = [4]byte{'q', 'e', 'm', '2'}
	}
	if dynamic {
		f.DataOffset = FooterSize
		f.Type = TypeDynamic
	}
	return f
}

// Encode is the footer's 512 bytes, with its checksum computed (VF3):
// f.Checksum is ignored.
func (f Footer) Encode() []byte {
	b := make([]byte, FooterSize)
	be := binary.BigEndian
	copy(b, FooterCookie)
	be.PutUint32(b[8:], f.Features)
	be.PutUint32(b[12:], f.Version)
	be.PutUint64(b[16:], f.DataOffset)
	be.PutUint32(b[24:], f.Timestamp)
	copy(b[28:32], f.CreatorApp[:])
	be.PutUint32(b[32:], f.CreatorVer)
	copy(b[36:40], f.CreatorOS[:])
	be.PutUint64(b[40:], f.OrigSize)
	be.PutUint64(b[48:], f.CurrentSize)
	be.PutUint16(b[56:], f.Cylinders)
	b[58] = f.Heads
	b[59] = f.SecPerTrack
	be.PutUint32(b[60:], f.Type)
	copy(b[68:84], f.UUID[:])
	b[84] = f.SavedState
	be.PutUint32(b[64:], Checksum(b, 64))
	return b
}

// NewTableEntries is the BAT size of a new dynamic disk of size bytes:
// one entry a block, rounded up.
func NewTableEntries(size int64) int64 {
	return (size/SectorSize + NewBlockSize/SectorSize - 1) / (NewBlockSize / SectorSize)
}

// NewDynHeader is the dynamic header QEMU 7.2 writes into a new dynamic
// disk of size bytes: NewBlockSize blocks, the BAT at NewTableOffset.
func NewDynHeader(size int64) DynHeader {
	return DynHeader{
		DataOffset:      0xffffffffffffffff,
		TableOffset:     NewTableOffset,
		HeaderVersion:   0x00010000,
		MaxTableEntries: uint32(NewTableEntries(size)),
		BlockSize:       NewBlockSize,
	}
}

// Encode is the dynamic header's DynHeaderSize bytes, with its checksum
// computed: h.Checksum is ignored.
func (h DynHeader) Encode() []byte {
	b := make([]byte, DynHeaderSize)
	be := binary.BigEndian
	copy(b, HeaderCookie)
	be.PutUint64(b[8:], h.DataOffset)
	be.PutUint64(b[16:], h.TableOffset)
	be.PutUint32(b[24:], h.HeaderVersion)
	be.PutUint32(b[28:], h.MaxTableEntries)
	be.PutUint32(b[32:], h.BlockSize)
	be.PutUint32(b[36:], Checksum(b, 36))
	return b
}

// TableBytes is the BAT's length on disk: entries x 4 rounded up to a
// sector.
func TableBytes(entries int64) int64 { return roundUp(entries * 4) }

// PutBATEntry encodes entry e as entry i of the BAT bytes b.
func PutBATEntry(b []byte, i int, e uint32) { binary.BigEndian.PutUint32(b[4*i:], e) }
