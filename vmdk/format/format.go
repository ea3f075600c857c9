package format

import (
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Sizes and constants of the format (block/vmdk.c).
const (
	SectorSize = 512
	// HeaderSize is the sparse extent header's sector.
	HeaderSize = 512
	// DescSize is how much of an embedded descriptor QEMU reads for the
	// CIDs (DESC_SIZE: 20 sectors).
	DescSize = 20 * SectorSize
	// MaxDescFile bounds a descriptor read from a file ((1 << 20) - 1,
	// vmdk_read_desc).
	MaxDescFile = 1<<20 - 1
	// MaxGrainSectors is QEMU's bound on a grain (1 GiB).
	MaxGrainSectors = 0x200000
	// MaxL1Size is QEMU's bound on a grain directory's entries.
	MaxL1Size = 32 * 1024 * 1024
	// MaxGTEs bounds the entries of a grain table.
	MaxGTEs = 512
	// GDAtEnd is a stream-optimized header's gd_offset: the footer near
	// the end of the file holds the real one.
	GDAtEnd = ^uint64(0)
	// MarkerSize is a grain marker's header (LBA and size).
	MarkerSize = 12
	// FooterSpan is the footer marker, footer and end-of-stream marker
	// at the end of a stream-optimized file (3 sectors).
	FooterSpan = 3 * SectorSize
	// GTEZeroed is a zeroed grain's table entry (with FlagZeroGrain).
	GTEZeroed = 1
)

// Header flags and compression.
const (
	FlagNLDetect      = 1 << 0
	FlagRGD           = 1 << 1
	FlagZeroGrain     = 1 << 2
	FlagCompress      = 1 << 16
	FlagMarker        = 1 << 17
	CompressDeflate   = 1
	MarkerEndOfStream = 0
	MarkerGrainTable  = 1
	MarkerGrainDir    = 2
	MarkerFooter      = 3
)

// Magics, as the file's first four bytes.
var (
	MagicVMDK4 = []byte("KDMV")
	MagicVMDK3 = []byte("COWD")
)

// Errors an *Error wraps (KF2).
var (
	ErrCorrupt     = errors.New("vmdk: corrupt image")
	ErrTooLarge    = errors.New("vmdk: too large")
	ErrUnsupported = errors.New("vmdk: not supported by qring")
)

// Error is a rejection in QEMU's words (KF2).
type Error struct {
	Msg string
	Err error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func corrupt(format string, a ...any) error {
	return &Error{Msg: fmt.Sprintf(format, a...), Err: ErrCorrupt}
}

// Unsupported is a valid image qring does not read (KF2).
func Unsupported(format string, a ...any) error {
	return &Error{Msg: fmt.Sprintf(format, a...), Err: ErrUnsupported}
}

// Header is a hosted sparse extent's header (VMDK4Header after the
// magic), fields as stored.
type Header struct {
	Version      uint32
	Flags        uint32
	Capacity     uint64 // sectors
	Granularity  uint64 // sectors per grain
	DescOffset   uint64 // sectors
	DescSize     uint64 // sectors
	GTEs         uint32 // entries per grain table
	RGDOffset    uint64 // sectors
	GDOffset     uint64 // sectors
	GrainOffset  uint64 // sectors
	CompressAlgo uint16
}

// HasMagic reports whether b starts with "KDMV".
func HasMagic(b []byte) bool { return len(b) >= 4 && string(b[:4]) == string(MagicVMDK4) }

// ParseHeader decodes a sparse extent header from the first sector of
// the file (magic included). It checks the magic only: Layout checks
// the rest, in QEMU's order.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, corrupt("Could not read header: short read")
	}
	if !HasMagic(b) {
		if len(b) >= 4 && string(b[:4]) == string(MagicVMDK3) {
			return Header{}, Unsupported("VMDK3 (COWD) sparse extents are not supported by qring")
		}
		return Header{}, corrupt("Image not in VMDK format")
	}
	le := binary.LittleEndian
	return Header{
		Version:      le.Uint32(b[4:]),
		Flags:        le.Uint32(b[8:]),
		Capacity:     le.Uint64(b[12:]),
		Granularity:  le.Uint64(b[20:]),
		DescOffset:   le.Uint64(b[28:]),
		DescSize:     le.Uint64(b[36:]),
		GTEs:         le.Uint32(b[44:]),
		RGDOffset:    le.Uint64(b[48:]),
		GDOffset:     le.Uint64(b[56:]),
		GrainOffset:  le.Uint64(b[64:]),
		CompressAlgo: le.Uint16(b[77:]),
	}, nil
}

// ParseFooter checks the last three sectors of a stream-optimized file
// (footer marker, footer header, end-of-stream marker) as QEMU does and
// returns the footer's header, which takes precedence over the first.
func ParseFooter(b []byte) (Header, error) {
	if len(b) < FooterSpan {
		return Header{}, corrupt("Invalid footer")
	}
	le := binary.LittleEndian
	fm, hd, eos := b[:512], b[512:1024], b[1024:1536]
	if !HasMagic(hd) || le.Uint32(fm[8:]) != 0 || le.Uint32(fm[12:]) != MarkerFooter ||
		le.Uint64(eos) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != MarkerEndOfStream {
		return Header{}, corrupt("Invalid footer")
	}
	h, err := ParseHeader(hd)
	return h, err
}

// Compressed reports whether grains are deflated (QEMU's test: the
// compression algorithm, not the flag).
func (h Header) Compressed() bool { return h.CompressAlgo == CompressDeflate }

// Layout is a sparse extent's geometry, checked.
type Layout struct {
	Sectors      int64 // the extent's capacity
	GrainSectors int64
	GTEs         int64
	L1Size       int64 // grain directory entries
	L1EntrySecs  int64 // sectors one directory entry maps
	GDOffset     int64 // bytes
	// RGDOffset is the redundant grain directory's offset in bytes as
	// QEMU takes it (l1_backup_table_offset): rgd_offset shifted by 9
	// bits in 64 (a shift may wrap, to a negative offset or to 0) with
	// FlagRGD; 0 is none.
	RGDOffset  int64
	Compressed bool
	Marker     bool
	ZeroGrain  bool
}

// Layout checks h as vmdk_open_vmdk4 and vmdk_add_extent do, in their
// order and words, for a file of fileSectors sectors (KF2). A header
// whose gd_offset says GDAtEnd must be the footer's (ParseFooter).
func (h Header) Layout(fileSectors int64) (Layout, error) {
	if h.Version > 3 {
		return Layout{}, &Error{Msg: fmt.Sprintf("Unsupported VMDK version %d", h.Version), Err: ErrUnsupported}
	}
	if h.GTEs > MaxGTEs {
		return Layout{}, corrupt("L2 table size too big")
	}
	// QEMU computes these in uint32 (l1_entry_sectors, l1_size).
	l1es := uint32(uint64(h.GTEs) * h.Granularity)
	if l1es == 0 {
		return Layout{}, corrupt("L1 entry size is invalid")
	}
	l1 := uint32((h.Capacity + uint64(l1es) - 1) / uint64(l1es))
	if fileSectors < 0 || uint64(fileSectors) < h.GrainOffset {
		return Layout{}, corrupt("File truncated, expecting at least %d bytes", int64(h.GrainOffset*SectorSize))
	}
	if h.Granularity > MaxGrainSectors {
		return Layout{}, &Error{Msg: "Invalid granularity, image may be corrupt", Err: ErrTooLarge}
	}
	if l1 > MaxL1Size {
		return Layout{}, &Error{Msg: "L1 size too big", Err: ErrTooLarge}
	}
	if h.GDOffset == GDAtEnd || h.GDOffset >= 1<<54 { // 2^54 sectors are 2^63 bytes: past an int64
		return Layout{}, corrupt("Could not read l1 table: grain directory offset %#x out of range", h.GDOffset)
	}
	if h.Capacity >= 1<<54 {
		return Layout{}, &Error{Msg: "Image size too large", Err: ErrTooLarge}
	}
	return Layout{
		Sectors:      int64(h.Capacity),
		GrainSectors: int64(h.Granularity),
		GTEs:         int64(h.GTEs),
		L1Size:       int64(l1),
		L1EntrySecs:  int64(l1es),
		GDOffset:     int64(h.GDOffset) * SectorSize,
		RGDOffset:    h.rgdOffset(),
		Compressed:   h.Compressed(),
		Marker:       h.Flags&FlagMarker != 0,
		ZeroGrain:    h.Flags&FlagZeroGrain != 0,
	}, nil
}

// rgdOffset is Layout's RGDOffset.
func (h Header) rgdOffset() int64 {
	if h.Flags&FlagRGD == 0 {
		return 0
	}
	return int64(h.RGDOffset << 9)
}

// GrainBytes is the grain size in bytes.
func (l Layout) GrainBytes() int64 { return l.GrainSectors * SectorSize }

// Index returns the grain directory and grain table indexes of guest
// byte off within the extent (KF4); ok is false past the directory
// (QEMU's VMDK_ERROR).
func (l Layout) Index(off int64) (l1, l2 int64, ok bool) {
	s := off / SectorSize
	l1 = s / l1EntryOr1(l.L1EntrySecs)
	if l1 >= l.L1Size {
		return 0, 0, false
	}
	l2 = (s / max(l.GrainSectors, 1)) % max(l.GTEs, 1)
	return l1, l2, true
}

func l1EntryOr1(v int64) int64 { return max(v, 1) }

// Entry decodes little-endian uint32 entry i of a grain directory or
// table.
func Entry(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }

// Marker is a grain marker's header (VmdkGrainMarker): the grain's LBA
// and the compressed size that follows.
type Marker struct {
	LBA  uint64
	Size uint32
}

// ParseMarker decodes a grain marker; it fails as QEMU's read does for
// a size of zero or more than two grains (the bytes QEMU reads).
func ParseMarker(b []byte, grainBytes int64) (Marker, error) {
	if len(b) < MarkerSize {
		return Marker{}, corrupt("Invalid argument: short grain marker")
	}
	m := Marker{LBA: binary.LittleEndian.Uint64(b), Size: binary.LittleEndian.Uint32(b[8:])}
	if m.Size == 0 || int64(m.Size) > 2*grainBytes {
		return Marker{}, corrupt("Invalid argument: grain marker size %d", m.Size)
	}
	return m, nil
}

// Inflate inflates the zlib stream src into the grain: it discards skip
// bytes, fills dst, and reads the rest of the stream to its end; the
// stream must end, intact, within grainBytes (KF5). Memory stays small
// whatever the grain size.
func Inflate(src io.Reader, grainBytes, skip int64, dst []byte) error {
	if skip < 0 || skip+int64(len(dst)) > grainBytes {
		return corrupt("Invalid argument: read outside the grain")
	}
	zr, err := zlib.NewReader(src)
	if err != nil {
		return corrupt("Invalid argument: compressed grain: %v", err)
	}
	defer zr.Close()
	lr := &io.LimitedReader{R: zr, N: grainBytes + 1}
	if _, err := io.CopyN(io.Discard, lr, skip); err != nil {
		return corrupt("Invalid argument: compressed grain: %v", err)
	}
	if _, err := io.ReadFull(lr, dst); err != nil {
		return corrupt("Invalid argument: compressed grain: %v", err)
	}
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return corrupt("Invalid argument: compressed grain: %v", err)
	}
	if lr.N == 0 {
		return corrupt("Invalid argument: compressed grain inflates past the grain")
	}
	return nil
}

// Descriptor is what QEMU reads from a descriptor (KF3).
type Descriptor struct {
	CreateType string
	// HasCreateType is false when createType is missing or malformed.
	HasCreateType bool
	CID           uint32
	ParentCID     uint32
	HasCID        bool
	HasParentCID  bool
	// ParentHint is parentFileNameHint's value: the text from two bytes
	// past the key to the next double quote, as vmdk_parent_open takes
	// it; "" when the key is absent or the value empty (QEMU opens no
	// parent then).
	ParentHint string
	// ParentHintOpen is a parentFileNameHint with no double quote after
	// it: QEMU refuses the image (EINVAL).
	ParentHintOpen bool
	Extents        []ExtentLine
	// Invalid is the first extent line QEMU refuses ("Invalid extent
	// line: ..."), "" when none.
	Invalid string
}

// ExtentLine is one extent of a descriptor.
type ExtentLine struct {
	Access  string
	Sectors int64
	Type    string
	File    string
	Offset  int64 // sectors, FLAT only
}

// cstr is the text up to the first NUL (QEMU handles the descriptor as
// a C string).
func cstr(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

// ParseDescriptor reads a descriptor's text as QEMU does (KF3). It never
// fails: what QEMU refuses is left for the caller to word (a missing
// createType, an invalid extent line).
func ParseDescriptor(text string) Descriptor {
	text = cstr(text)
	var d Descriptor
	if i := strings.Index(text, "createType"); i >= 0 {
		p := i + len("createType") + 2
		if p < len(text) {
			if j := strings.IndexByte(text[p:], '"'); j >= 0 && j+1 <= 128 {
				d.CreateType, d.HasCreateType = text[p:p+j], true
			}
		}
	}
	d.CID, d.HasCID = scanCID(text, "CID")
	d.ParentCID, d.HasParentCID = scanCID(text, "parentCID")
	if i := strings.Index(text, "parentFileNameHint"); i >= 0 {
		p := min(i+len("parentFileNameHint")+2, len(text))
		if j := strings.IndexByte(text[p:], '"'); j >= 0 {
			d.ParentHint = text[p : p+j]
		} else {
			d.ParentHintOpen = true
		}
	}
	for p := 0; p < len(text); {
		np := strings.IndexByte(text[p:], '\n')
		end := len(text)
		if np >= 0 {
			end = p + np + 1
		}
		if e, ok, bad := parseExtentLine(text[p:]); bad {
			d.Invalid = strings.TrimSuffix(text[p:end], "\n")
			return d
		} else if ok {
			d.Extents = append(d.Extents, e)
		}
		p = end
	}
	return d
}

// scanCID is strstr(desc, name) then sscanf("%x") after name and one
// more character, as vmdk_read_cid.
func scanCID(text, name string) (uint32, bool) {
	i := strings.Index(text, name)
	if i < 0 {
		return 0, false
	}
	p := i + len(name) + 1
	if p > len(text) {
		return 0, false
	}
	s := skipSpace(text[p:])
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) >= 3 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && hexVal(s[2]) >= 0 {
		s = s[2:]
	}
	var v uint64
	n := 0
	for n < len(s) && hexVal(s[n]) >= 0 {
		if v < 1<<60 {
			v = v<<4 | uint64(hexVal(s[n]))
		}
		n++
	}
	if n == 0 {
		return 0, false
	}
	if v > 0xffffffff {
		v = 0xffffffff
	}
	if neg {
		v = -v
	}
	return uint32(v), true
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func skipSpace(s string) string {
	for s != "" && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// scanWord is %Ns: up to n non-space characters after skipping space.
func scanWord(s string, n int) (string, string, bool) {
	s = skipSpace(s)
	i := 0
	for i < len(s) && i < n && !isSpace(s[i]) {
		i++
	}
	if i == 0 {
		return "", s, false
	}
	return s[:i], s[i:], true
}

// scanInt is %lld: an optional sign and decimal digits after space.
func scanInt(s string) (int64, string, bool) {
	s = skipSpace(s)
	i, neg := 0, false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	j := i
	var v int64
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		if v <= (1<<63-1)/10 {
			v = v*10 + int64(s[j]-'0')
		} else {
			v = 1<<63 - 1
		}
		j++
	}
	if j == i {
		return 0, s, false
	}
	if neg {
		v = -v
	}
	return v, s[j:], true
}

// parseExtentLine matches one extent line at s as vmdk_parse_extents
// does: ok for an extent QEMU opens, bad for a line it refuses, neither
// for a line it skips.
func parseExtentLine(s string) (e ExtentLine, ok, bad bool) {
	matches := 0
	var rest string
	var good bool
	flat := int64(-1)
	if e.Access, rest, good = scanWord(s, 10); good {
		matches++
		if e.Sectors, rest, good = scanInt(rest); good {
			matches++
			if e.Type, rest, good = scanWord(rest, 10); good {
				matches++
				rest = skipSpace(rest)
				if rest != "" && rest[0] == '"' {
					i := 1
					for i < len(rest) && i <= 511 && rest[i] != '\n' && rest[i] != '\r' && rest[i] != '"' {
						i++
					}
					if i > 1 {
						e.File = rest[1:i]
						matches++
						rest = rest[i:]
						if rest != "" && rest[0] == '"' {
							if v, _, g := scanInt(rest[1:]); g {
								flat = v
								matches++
							}
						}
					}
				}
			}
		}
	}
	if matches < 4 || e.Access != "RW" {
		return e, false, false
	}
	switch e.Type {
	case "FLAT":
		if matches != 5 || flat < 0 {
			return e, false, true
		}
		e.Offset = flat
	case "VMFS":
		if matches != 4 {
			return e, false, true
		}
		flat = 0
	default:
		if matches != 4 {
			return e, false, true
		}
	}
	switch e.Type {
	case "FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE":
	default:
		return e, false, false
	}
	if e.Sectors <= 0 {
		return e, false, false
	}
	return e, true, false
}
