package format

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Values QEMU 7.2 writes into a new monolithicSparse extent
// (vmdk_init_extent, KF6).
const (
	// NewGrainSectors is a new extent's grain (64 KiB).
	NewGrainSectors = 128
	// NewGTEs is a new extent's entries per grain table.
	NewGTEs = 512
	// newDescSectors is the room left for the embedded descriptor.
	newDescSectors = 20
	// newDescOffset is the embedded descriptor's sector.
	newDescOffset = 1
)

// Adapter types qemu-img create -f vmdk accepts (adapter_type).
var Adapters = []string{"ide", "buslogic", "lsilogic", "legacyESX"}

// NewOptions are the choices of a new monolithicSparse image (QEMU's
// vmdk create options that it honours).
type NewOptions struct {
	Size         int64  // bytes, rounded up to a sector
	Adapter      string // one of Adapters, "" for ide
	HWVersion    string // "" for "4" ("6" with Compat6)
	ToolsVersion string // "" for "2147483647"
	Compat6      bool
	ZeroedGrain  bool
	// Stream makes a streamOptimized image: deflated grains behind
	// grain markers (subformat=streamOptimized).
	Stream bool
	// ParentHint makes the image a snapshot of another VMDK image: its
	// parentFileNameHint, the parent's name as given, and ParentCID the
	// parent's CID (KF6; "" and 0 for none).
	ParentHint string
	ParentCID  uint32
	// Subformat is a descriptor file's create type (KF8):
	// "monolithicFlat", "twoGbMaxExtentFlat" or "twoGbMaxExtentSparse";
	// "" for one hosted sparse extent (monolithicSparse, or
	// streamOptimized with Stream).
	Subformat string
}

// Descriptor files' create types (KF8).
const (
	MonolithicFlat       = "monolithicFlat"
	TwoGbMaxExtentFlat   = "twoGbMaxExtentFlat"
	TwoGbMaxExtentSparse = "twoGbMaxExtentSparse"
)

// SplitSectors is the most a twoGbMaxExtent* extent holds (2 GiB), as
// QEMU splits them.
const SplitSectors = 0x80000000 / SectorSize

// createType is the descriptor's createType of a new image.
func (o NewOptions) createType() string {
	switch {
	case o.Subformat != "":
		return o.Subformat
	case o.Stream:
		return "streamOptimized"
	}
	return "monolithicSparse"
}

// Flat reports whether o's extents are flat (KF8).
func (o NewOptions) Flat() bool {
	return o.Subformat == MonolithicFlat || o.Subformat == TwoGbMaxExtentFlat
}

// NewExtent is one extent of a new image as its descriptor names it.
type NewExtent struct {
	File    string // the extent file's name, relative to the descriptor's
	Sectors int64
	Flat    bool
}

// NewExtents are a new image's extents as vmdk_co_do_create names and
// sizes them (KF8): for one hosted extent, name itself; for a
// descriptor file named name, its base name with "-flat" (monolithicFlat)
// or "-f001", "-s001"... (twoGbMaxExtentFlat, twoGbMaxExtentSparse)
// before its last dot, each split extent 2 GiB but the last. A size of
// 0 has no extent in a descriptor file (QEMU opens such an image as
// one of 0 bytes; its qemu-img info and convert fail an assertion
// there).
func NewExtents(o NewOptions, name string) []NewExtent {
	sectors := o.Size / SectorSize
	if o.Size%SectorSize != 0 {
		sectors++
	}
	if o.Subformat == "" {
		return []NewExtent{{File: name, Sectors: sectors}}
	}
	prefix, postfix := name, ""
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		prefix, postfix = name[:i], name[i:]
	}
	if o.Subformat == MonolithicFlat {
		if sectors == 0 {
			return nil
		}
		return []NewExtent{{File: prefix + "-flat" + postfix, Sectors: sectors, Flat: true}}
	}
	letter := "s"
	if o.Flat() {
		letter = "f"
	}
	var out []NewExtent
	for i := 1; sectors > 0; i++ {
		n := min(sectors, SplitSectors)
		out = append(out, NewExtent{File: fmt.Sprintf("%s-%s%03d%s", prefix, letter, i, postfix), Sectors: n, Flat: o.Flat()})
		sectors -= n
	}
	return out
}

// Plan is a new monolithicSparse extent's layout (KF6).
type Plan struct {
	Header  Header
	GTCount int64 // grain tables, in each directory
	GDBytes int64 // a directory's bytes, a whole number of sectors
	GTBytes int64 // a table's bytes
}

// NewPlan lays out a new extent of size bytes as vmdk_init_extent does.
// It refuses what QEMU's 32-bit arithmetic would get wrong (a grain
// count or a sector offset past 32 bits): QEMU 7.2 writes a broken
// image there.
func NewPlan(o NewOptions) (Plan, error) {
	if o.Size < 0 {
		return Plan{}, &Error{Msg: "Invalid size", Err: ErrTooLarge}
	}
	// Rounded up to a sector without (o.Size + SectorSize - 1), which
	// overflows within a sector of the int64 limit into a negative size
	// that the checks below let by (a plan of a huge capacity).
	sectors := o.Size / SectorSize
	if o.Size%SectorSize != 0 {
		sectors++
	}
	grains := (sectors + NewGrainSectors - 1) / NewGrainSectors
	gtBytes := int64(NewGTEs * 4)
	gtCount := (grains + NewGTEs - 1) / NewGTEs
	gdSectors := (gtCount*4 + SectorSize - 1) / SectorSize
	gtSectors := gtBytes / SectorSize
	rgd := int64(newDescOffset + newDescSectors)
	gd := rgd + gdSectors + gtSectors*gtCount
	grainOff := (gd + gdSectors + gtSectors*gtCount + NewGrainSectors - 1) / NewGrainSectors * NewGrainSectors
	if grains > 1<<32-1 || grainOff > 1<<32-1 {
		return Plan{}, &Error{Msg: fmt.Sprintf("vmdk: a size of %d bytes is too large for a sparse extent (its grain tables would lie past 2 TiB in the file)", o.Size), Err: ErrTooLarge}
	}
	h := Header{
		Version:     1,
		Flags:       FlagRGD | FlagNLDetect,
		Capacity:    uint64(sectors),
		Granularity: NewGrainSectors,
		DescOffset:  newDescOffset,
		DescSize:    newDescSectors,
		GTEs:        NewGTEs,
		RGDOffset:   uint64(rgd),
		GDOffset:    uint64(gd),
		GrainOffset: uint64(grainOff),
	}
	if o.ZeroedGrain {
		h.Version, h.Flags = 2, h.Flags|FlagZeroGrain
	}
	if o.Stream {
		h.Version, h.Flags, h.CompressAlgo = 3, h.Flags|FlagCompress|FlagMarker, CompressDeflate
	}
	return Plan{Header: h, GTCount: gtCount, GDBytes: gdSectors * SectorSize, GTBytes: gtBytes}, nil
}

// Encode is the header's sector as QEMU writes it: the magic, the
// fields, the newline-detection bytes, zeros to the end.
func (h Header) Encode() []byte {
	b := make([]byte, HeaderSize)
	le := binary.LittleEndian
	copy(b, MagicVMDK4)
	le.PutUint32(b[4:], h.Version)
	le.PutUint32(b[8:], h.Flags)
	le.PutUint64(b[12:], h.Capacity)
	le.PutUint64(b[20:], h.Granularity)
	le.PutUint64(b[28:], h.DescOffset)
	le.PutUint64(b[36:], h.DescSize)
	le.PutUint32(b[44:], h.GTEs)
	le.PutUint64(b[48:], h.RGDOffset)
	le.PutUint64(b[56:], h.GDOffset)
	le.PutUint64(b[64:], h.GrainOffset)
	copy(b[73:], "\n \r\n")
	le.PutUint16(b[77:], h.CompressAlgo)
	return b
}

// Directory is a new grain directory at sector gdSector: entry i names
// the table that follows it at i tables along (KF6).
func (p Plan) Directory(gdSector uint64) []byte {
	b := make([]byte, p.GDBytes)
	first := gdSector + uint64(p.GDBytes/SectorSize)
	for i := int64(0); i < p.GTCount; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(first+uint64(i)*uint64(p.GTBytes/SectorSize)))
	}
	return b
}

// NewDescriptor is a new image's descriptor, as vmdk_co_do_create
// prints it (KF6, KF8): embedded in a monolithicSparse or
// streamOptimized extent, or a descriptor file's text, naming extents
// (NewExtents). It refuses what QEMU refuses before it makes a file.
func NewDescriptor(o NewOptions, cid uint32, extents []NewExtent) (string, error) {
	hw := o.HWVersion
	if o.Compat6 {
		if hw != "" {
			return "", &Error{Msg: "compat6 cannot be enabled with hwversion set", Err: ErrUnsupported}
		}
		hw = "6"
	}
	if o.Flat() && o.ParentHint != "" {
		return "", &Error{Msg: "Flat image can't have backing file", Err: ErrUnsupported}
	}
	if o.Flat() && o.ZeroedGrain {
		return "", &Error{Msg: "Flat image can't enable zeroed grain", Err: ErrUnsupported}
	}
	parentCID, parentLine := uint32(0xffffffff), ""
	if o.ParentHint != "" {
		parentCID, parentLine = o.ParentCID, fmt.Sprintf("parentFileNameHint=\"%s\"", o.ParentHint)
	}
	if hw == "" {
		hw = "4"
	}
	tools := o.ToolsVersion
	if tools == "" {
		tools = "2147483647"
	}
	adapter, heads := o.Adapter, int64(16)
	if adapter == "" {
		adapter = "ide"
	}
	if adapter != "ide" {
		heads = 255
	}
	size := (o.Size + SectorSize - 1) &^ (SectorSize - 1)
	var s strings.Builder
	fmt.Fprintf(&s, "# Disk DescriptorFile\nversion=1\nCID=%x\nparentCID=%x\ncreateType=\"%s\"\n%s\n", cid, parentCID, o.createType(), parentLine)
	fmt.Fprintf(&s, "# Extent description\n")
	for _, e := range extents {
		if e.Flat {
			fmt.Fprintf(&s, "RW %d FLAT \"%s\" 0\n", e.Sectors, e.File)
		} else {
			fmt.Fprintf(&s, "RW %d SPARSE \"%s\"\n", e.Sectors, e.File)
		}
	}
	fmt.Fprintf(&s, "\n")
	fmt.Fprintf(&s, "# The Disk Data Base\n#DDB\n\n")
	fmt.Fprintf(&s, "ddb.virtualHWVersion = \"%s\"\nddb.geometry.cylinders = \"%d\"\nddb.geometry.heads = \"%d\"\n", hw, size/(63*heads*SectorSize), heads)
	fmt.Fprintf(&s, "ddb.geometry.sectors = \"63\"\nddb.adapterType = \"%s\"\nddb.toolsVersion = \"%s\"\n", adapter, tools)
	if o.Subformat == "" && s.Len() > DescSize-1 {
		return "", &Error{Msg: fmt.Sprintf("vmdk: the descriptor (%d bytes) does not fit its %d sectors", s.Len(), newDescSectors), Err: ErrUnsupported}
	}
	return s.String(), nil
}

// RewriteCID is vmdk_write_cid: desc (the descriptor's DescSize bytes
// as read) with the value after the first "CID" replaced by cid and the
// text from "parentCID" on kept after it; the bytes past the new text's
// NUL stay as they were, as in QEMU's buffer (KF7). ok is false when the
// text has no "parentCID" (QEMU fails the write with EINVAL).
func RewriteCID(desc []byte, cid uint32) (out []byte, ok bool) {
	if len(desc) == 0 {
		return nil, false
	}
	out = slices.Clone(desc)
	out[len(out)-1] = 0
	text := cstr(string(out))
	p := strings.Index(text, "parentCID")
	if p < 0 {
		return nil, false
	}
	tail := text[p:]
	// "parentCID" holds "CID": the first one is at or before it. As in
	// QEMU's buffer: the value is printed past "CID" and one more byte
	// (past the text's end when it ends there), then the tail appended
	// to the text as it then is.
	at := strings.Index(text, "CID") + len("CID=")
	if at < len(out) {
		v := fmt.Sprintf("%x\n", cid)
		v = v[:min(len(v), len(out)-at-1)]
		copy(out[at:], v)
		out[at+len(v)] = 0
	}
	l := bytes.IndexByte(out, 0)
	tail = tail[:min(len(tail), len(out)-1-l)]
	copy(out[l:], tail)
	out[l+len(tail)] = 0
	return out, true
}

// EncodeGrain is a compressed grain as a streamOptimized extent holds
// it (KF5): the grain marker (lba, the guest sector it starts at, and
// the size of what follows), the zlib stream of data, and zeros to the
// end of the last sector.
func EncodeGrain(lba uint64, data [][]byte) []byte {
	var b bytes.Buffer
	b.Write(make([]byte, MarkerSize))
	zw := zlib.NewWriter(&b)
	for _, p := range data {
		zw.Write(p) // a bytes.Buffer takes everything
	}
	zw.Close()
	out := b.Bytes()
	binary.LittleEndian.PutUint64(out, lba)
	binary.LittleEndian.PutUint32(out[8:], uint32(len(out)-MarkerSize))
	return append(out, make([]byte, (SectorSize-len(out)%SectorSize)%SectorSize)...)
}
