package format

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
)

var be = binary.BigEndian

// Magic is "QFI\xfb".
const Magic = 0x514649fb

// Limits, as QEMU's.
const (
	MinClusterBits  = 9
	MaxClusterBits  = 21
	MaxL1Bytes      = 32 << 20 // QCOW_MAX_L1_SIZE
	MaxReftableSize = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	MaxBackingName  = 1023
	V2HeaderLen     = 72
	V3HeaderLen     = 104
	// QEMUHeaderLen is the v3 header length QEMU writes (with the
	// compression_type byte and padding).
	QEMUHeaderLen = 112
	// MaxVirtualSize keeps every guest offset below 2^63 with room for
	// arithmetic (QEMU: QCOW_MAX... / INT64_MAX).
	MaxVirtualSize = 1 << 62
	// maxOffset is QEMU's bound for the end of any table (INT64_MAX,
	// qcow2_validate_table).
	maxOffset = 1<<63 - 1
)

// Feature bits.
const (
	IncompatDirty        = 1 << 0
	IncompatCorrupt      = 1 << 1
	IncompatDataFile     = 1 << 2
	IncompatCompression  = 1 << 3
	IncompatExtendedL2   = 1 << 4
	IncompatKnown        = IncompatDirty | IncompatCorrupt | IncompatDataFile | IncompatCompression | IncompatExtendedL2
	CompatLazyRefcounts  = 1 << 0
	AutoclearBitmaps     = 1 << 0
	AutoclearDataFileRaw = 1 << 1
	AutoclearKnown       = AutoclearBitmaps | AutoclearDataFileRaw
)

// Header extension types.
const (
	ExtEnd          = 0x00000000
	ExtBackingFmt   = 0xe2792aca
	ExtFeatureNames = 0x6803f857
	ExtBitmaps      = 0x23852875
	ExtCrypto       = 0x0537be77
	ExtDataFile     = 0x44415441
)

// Compression types.
const (
	CompressionZlib = 0
	CompressionZstd = 1
)

// Crypt methods.
const (
	CryptNone = 0
	CryptAES  = 1
	CryptLUKS = 2
)

// Extension is a header extension kept verbatim (FM3).
type Extension struct {
	Type uint32
	Data []byte
}

// Header is a decoded qcow2 header with its extensions.
type Header struct {
	Version               uint32
	BackingFileOffset     uint64
	BackingFileSize       uint32
	ClusterBits           uint32
	Size                  uint64
	CryptMethod           uint32
	L1Size                uint32
	L1TableOffset         HostOff
	RefcountTableOffset   HostOff
	RefcountTableClusters uint32
	NbSnapshots           uint32
	SnapshotsOffset       HostOff
	IncompatibleFeatures  uint64
	CompatibleFeatures    uint64
	AutoclearFeatures     uint64
	RefcountOrder         uint32
	HeaderLength          uint32
	CompressionType       uint8

	// UnknownFields are the header bytes past the fields we know, up to
	// HeaderLength, preserved on rewrite (FM3).
	UnknownFields []byte
	// Extensions in file order, excluding the end marker. Known types are
	// also decoded into the fields below; Encode writes BackingFormat and
	// DataFile from the fields and everything else (feature names
	// included) verbatim, then stores what it wrote back here.
	Extensions    []Extension
	BackingFile   string
	BackingFormat string
	DataFile      string
	// Crypto is the full disk encryption header pointer, set when
	// CryptMethod is CryptLUKS (crypt.go).
	Crypto CryptoHeader
}

// ClusterSize is 1 << ClusterBits.
func (h *Header) ClusterSize() uint64 { return 1 << h.ClusterBits }

// ExtendedL2 reports the extended L2 incompatible bit.
func (h *Header) ExtendedL2() bool { return h.IncompatibleFeatures&IncompatExtendedL2 != 0 }

// FeatureName returns the name the feature name table extension gives to
// bit of feature type typ (0 incompatible, 1 compatible, 2 autoclear), or
// "" if there is none.
func FeatureName(exts []Extension, typ, bit uint8) string {
	for _, e := range exts {
		if e.Type != ExtFeatureNames {
			continue
		}
		for i := 0; i+48 <= len(e.Data); i += 48 {
			if e.Data[i] == typ && e.Data[i+1] == bit {
				return strings.TrimRight(string(e.Data[i+2:i+48]), "\x00")
			}
		}
	}
	return ""
}

// ParseHeader decodes the header at the start of b, which should hold all
// of cluster 0 (or the whole file if shorter). It validates every field
// that can be checked without the file size (FM1, FM2); the engine checks
// offsets against the file. The checks QEMU 7.2's qcow2_do_open makes
// too come in its order, and their errors carry its words (FM7), so the
// first fault of a header with several is the one QEMU names; ours that
// QEMU does not make follow the QEMU check they refine.
func ParseHeader(b []byte) (*Header, error) { return parseHeader(b, false) }

// ParseHeaderForCheck is ParseHeader for an open that only checks or
// repairs the image (QEMU's BDRV_O_CHECK): it lets by what only a check
// can make sense of: no refcount table (refcount_table_clusters 0, which
// QEMU too opens only for a check: every cluster in use then counts 0,
// and a rebuild cures it), and a refcount, L1 or snapshot table in the
// header cluster (which QEMU opens always, reading the header as the
// table; its entries are damage the check reports). Nothing else is
// relaxed.
func ParseHeaderForCheck(b []byte) (*Header, error) { return parseHeader(b, true) }

func parseHeader(b []byte, check bool) (*Header, error) {
	// QEMU reads the fixed header with bytes past a short file as zeros:
	// a version, cluster size or header length of 0 then fails below.
	var fixed [V3HeaderLen]byte
	copy(fixed[:], b)
	f := fixed[:]
	if m := be.Uint32(f[0:]); m != Magic {
		return nil, &FieldError{Field: "magic", Value: uint64(m), Msg: fmt.Sprintf("want %#x", Magic),
			Err: ErrNotQcow2, Qemu: "Image is not in qcow2 format"}
	}
	h := &Header{
		Version:               be.Uint32(f[4:]),
		BackingFileOffset:     be.Uint64(f[8:]),
		BackingFileSize:       be.Uint32(f[16:]),
		ClusterBits:           be.Uint32(f[20:]),
		Size:                  be.Uint64(f[24:]),
		CryptMethod:           be.Uint32(f[32:]),
		L1Size:                be.Uint32(f[36:]),
		L1TableOffset:         HostOff(be.Uint64(f[40:])),
		RefcountTableOffset:   HostOff(be.Uint64(f[48:])),
		RefcountTableClusters: be.Uint32(f[56:]),
		NbSnapshots:           be.Uint32(f[60:]),
		SnapshotsOffset:       HostOff(be.Uint64(f[64:])),
	}
	switch h.Version {
	case 2:
		h.RefcountOrder = 4
		h.HeaderLength = V2HeaderLen
	case 3:
		h.IncompatibleFeatures = be.Uint64(f[72:])
		h.CompatibleFeatures = be.Uint64(f[80:])
		h.AutoclearFeatures = be.Uint64(f[88:])
		h.RefcountOrder = be.Uint32(f[96:])
		h.HeaderLength = be.Uint32(f[100:])
	default:
		return nil, unsupportedQ("version", uint64(h.Version), fmt.Sprintf("Unsupported qcow2 version %d", h.Version), "only versions 2 and 3 exist")
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, unsupportedQ("cluster_bits", uint64(h.ClusterBits), fmt.Sprintf("Unsupported cluster size: 2^%d", h.ClusterBits),
			"must be in [%d, %d]", MinClusterBits, MaxClusterBits)
	}
	if h.HeaderLength < V3HeaderLen && h.Version == 3 {
		return nil, corruptQ("header_length", uint64(h.HeaderLength), "qcow2 header too short", "must be >= 104")
	}
	cs := h.ClusterSize()
	if uint64(h.HeaderLength) > cs {
		return nil, corruptQ("header_length", uint64(h.HeaderLength), "qcow2 header exceeds cluster size", "larger than a cluster")
	}
	if h.HeaderLength%8 != 0 {
		return nil, corrupt("header_length", uint64(h.HeaderLength), "not a multiple of 8")
	}
	if uint64(len(b)) < uint64(h.HeaderLength) {
		return nil, corrupt("header_length", uint64(h.HeaderLength), "past the end of the file")
	}
	if h.Version == 3 && h.HeaderLength > V3HeaderLen {
		h.CompressionType = b[V3HeaderLen]
		// Bytes 105..111 are padding QEMU writes as zeros; keep
		// whatever lies past them verbatim (FM3).
		if h.HeaderLength > QEMUHeaderLen {
			h.UnknownFields = append([]byte(nil), b[QEMUHeaderLen:h.HeaderLength]...)
		}
	}
	if h.BackingFileOffset > cs {
		return nil, corruptQ("backing_file_offset", h.BackingFileOffset, "Invalid backing file offset", "past the header cluster")
	}
	if h.BackingFileOffset != 0 && h.BackingFileSize != 0 && h.BackingFileOffset < uint64(h.HeaderLength) {
		return nil, corrupt("backing_file_offset", h.BackingFileOffset, "backing file name overlaps the header")
	}
	if h.CompressionType > CompressionZstd {
		return nil, unsupportedQ("compression_type", uint64(h.CompressionType),
			fmt.Sprintf("qcow2: unknown compression type: %d", h.CompressionType), "unknown compression type")
	}
	if h.IncompatibleFeatures&IncompatCompression != 0 {
		if h.CompressionType != CompressionZstd {
			return nil, corruptQ("compression_type", uint64(h.CompressionType),
				"qcow2: Compression type incompatible feature bit must not be set", "compression type bit set but type is not zstd")
		}
	} else if h.CompressionType != CompressionZlib {
		return nil, corruptQ("compression_type", uint64(h.CompressionType),
			"qcow2: Compression type incompatible feature bit must be set", "non-zlib compression without the compression type bit")
	}
	if unk := h.IncompatibleFeatures &^ IncompatKnown; unk != 0 {
		return nil, unknownIncompat(h, b, unk)
	}
	if h.ExtendedL2() && h.ClusterBits < 14 {
		return nil, corruptQ("cluster_bits", uint64(h.ClusterBits), fmt.Sprintf("Unsupported subcluster size: %d", cs/SubclustersPerCluster),
			"extended L2 needs clusters of at least 16 KiB")
	}
	if h.RefcountOrder > 6 {
		return nil, unsupportedQ("refcount_order", uint64(h.RefcountOrder),
			"Reference count entry width too large; may not exceed 64 bits", "must be <= 6")
	}
	if h.RefcountTableClusters == 0 && !check {
		return nil, corruptQ("refcount_table_clusters", 0, "Image does not contain a reference count table", "no refcount table")
	}
	if uint64(h.RefcountTableClusters)*cs > MaxReftableSize {
		return nil, unsupportedQ("refcount_table_clusters", uint64(h.RefcountTableClusters), "Reference count table too large",
			"refcount table larger than %d bytes", MaxReftableSize)
	}
	if !clusterAligned(h, h.RefcountTableOffset) || uint64(h.RefcountTableOffset) > maxOffset-uint64(h.RefcountTableClusters)*cs {
		return nil, corruptQ("refcount_table_offset", uint64(h.RefcountTableOffset), "Reference count table offset invalid",
			"not cluster aligned or ends past 2^63")
	}
	if h.RefcountTableOffset == 0 && h.RefcountTableClusters > 0 && !check {
		return nil, corrupt("refcount_table_offset", 0, "refcount table in the header cluster")
	}
	if h.NbSnapshots > MaxSnapshots {
		return nil, corruptQ("nb_snapshots", uint64(h.NbSnapshots), "Snapshot table too large", "more than %d snapshots", MaxSnapshots)
	}
	// 40 bytes is the fixed part of a snapshot entry.
	if !clusterAligned(h, h.SnapshotsOffset) || uint64(h.SnapshotsOffset) > maxOffset-uint64(h.NbSnapshots)*40 {
		return nil, corruptQ("snapshots_offset", uint64(h.SnapshotsOffset), "Snapshot table offset invalid",
			"not cluster aligned or the snapshot table ends past 2^63")
	}
	if h.NbSnapshots > 0 && h.SnapshotsOffset == 0 && !check {
		return nil, corrupt("snapshots_offset", 0, "snapshot table in the header cluster")
	}
	// L1: cap and coverage (FM1).
	if uint64(h.L1Size)*8 > MaxL1Bytes {
		return nil, unsupportedQ("l1_size", uint64(h.L1Size), "Active L1 table too large", "L1 table larger than %d bytes", MaxL1Bytes)
	}
	g := NewGeometry(h.ClusterBits, h.RefcountOrder, h.ExtendedL2())
	// QEMU's size_to_l1 > INT_MAX (rounded up without overflowing near
	// 2^64).
	per := g.ClusterSize * g.L2Entries
	if l1 := h.Size/per + min(h.Size%per, 1); l1 > 1<<31-1 {
		return nil, unsupportedQ("size", h.Size, "Image is too big", "needs more than 2^31-1 L1 entries")
	}
	if h.Size > MaxVirtualSize {
		return nil, unsupported("size", h.Size, "virtual size too large")
	}
	// As QEMU's qcow2_validate_table: aligned even when empty, and the
	// table must end below INT64_MAX.
	if !g.Aligned(h.L1TableOffset) || uint64(h.L1TableOffset) > maxOffset-uint64(h.L1Size)*8 {
		return nil, corruptQ("l1_table_offset", uint64(h.L1TableOffset), "Active L1 table offset invalid",
			"not cluster aligned or ends past 2^63")
	}
	if need := g.L1EntriesFor(h.Size); uint64(h.L1Size) < need {
		return nil, corruptQ("l1_size", uint64(h.L1Size), "L1 table is too small", "too small for virtual size %d (need %d)", h.Size, need)
	}
	if h.L1TableOffset == 0 && h.L1Size > 0 && !check {
		return nil, corrupt("l1_table_offset", 0, "L1 table in the header cluster")
	}
	if h.CryptMethod > CryptLUKS {
		return nil, corruptQ("crypt_method", uint64(h.CryptMethod), fmt.Sprintf("Unsupported encryption method %d", h.CryptMethod),
			"unknown encryption method")
	}
	exts, err := parseExtensions(h, b)
	if err != nil {
		return nil, err
	}
	h.Extensions = exts
	for _, e := range exts {
		switch e.Type {
		case ExtBackingFmt:
			h.BackingFormat = string(e.Data)
		case ExtDataFile:
			h.DataFile = string(e.Data)
		}
	}
	if err := h.checkCrypto(); err != nil {
		return nil, err
	}
	// A name of 0 bytes is no backing file, as in QEMU (which reads an
	// empty name).
	if h.BackingFileOffset != 0 && h.BackingFileSize != 0 {
		if h.BackingFileSize > MaxBackingName {
			return nil, corruptQ("backing_file_size", uint64(h.BackingFileSize), "Backing file name too long", "more than %d bytes", MaxBackingName)
		}
		end := h.BackingFileOffset + uint64(h.BackingFileSize)
		if h.BackingFileOffset >= cs || end > cs || end > uint64(len(b)) {
			return nil, corrupt("backing_file_offset", h.BackingFileOffset, "backing file name outside the header cluster")
		}
		name := b[h.BackingFileOffset:end]
		// QEMU reads the name as a C string: it ends at the first NUL
		// (and one that starts with NUL is no backing file).
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		h.BackingFile = string(name)
	}
	return h, nil
}

// clusterAligned reports whether o starts a cluster of h (checked before
// h's geometry is known good: it needs the cluster size only).
func clusterAligned(h *Header, o HostOff) bool { return uint64(o)&(h.ClusterSize()-1) == 0 }

// unknownIncompat is the error of incompatible feature bits this engine
// does not know, unk: QEMU's report_unsupported_feature names the bits
// the image's feature name table names, in the table's order, then the
// rest as one hexadecimal mask.
func unknownIncompat(h *Header, b []byte, unk uint64) error {
	// The feature name table is parsed below; parse it now (once, best
	// effort) to name the bits.
	exts, _ := parseExtensions(h, b)
	var ours, qemu []string
	for i := 0; i < 64; i++ {
		if unk&(1<<i) != 0 {
			n := FeatureName(exts, 0, uint8(i))
			if n == "" {
				n = "unknown"
			}
			ours = append(ours, fmt.Sprintf("bit %d (%s)", i, n))
		}
	}
	rest := unk
	for _, e := range exts {
		if e.Type != ExtFeatureNames {
			continue
		}
		for i := 0; i+48 <= len(e.Data); i += 48 {
			name := strings.TrimRight(string(e.Data[i+2:i+48]), "\x00")
			if name == "" {
				break // QEMU's table ends at an empty name
			}
			if bit := e.Data[i+1]; e.Data[i] == 0 && bit < 64 && rest&(1<<bit) != 0 {
				qemu = append(qemu, name)
				rest &^= 1 << bit
			}
		}
	}
	if rest != 0 {
		qemu = append(qemu, fmt.Sprintf("Unknown incompatible feature: %x", rest))
	}
	return unsupportedQ("incompatible_features", unk, "Unsupported qcow2 feature(s): "+strings.Join(qemu, ", "),
		"unknown incompatible feature %s", strings.Join(ours, ", "))
}

// parseExtensions reads the extension list after the header (v3; v2
// images may have them too, after the 72-byte header).
func parseExtensions(h *Header, b []byte) ([]Extension, error) {
	cs := h.ClusterSize()
	limit := uint64(len(b))
	if limit > cs {
		limit = cs
	}
	if h.BackingFileOffset != 0 && h.BackingFileOffset < limit {
		limit = h.BackingFileOffset
	}
	off := uint64(h.HeaderLength)
	var exts []Extension
	for {
		if off >= limit {
			// QEMU reads extensions while offset < end and tolerates a
			// missing end marker, or the padding of the last extension
			// running into the backing file name or past the cluster.
			return exts, nil
		}
		if off+8 > limit {
			return nil, corrupt("header_extension", off, "extension header runs past the header cluster")
		}
		typ := be.Uint32(b[off:])
		n := uint64(be.Uint32(b[off+4:]))
		off += 8
		// QEMU checks the length before the type: an end marker's too.
		if n > limit-off {
			return nil, corruptQ("header_extension", uint64(typ), "Header extension too large", "length %d runs past the header cluster", n)
		}
		if typ == ExtEnd {
			return exts, nil
		}
		if typ == ExtCrypto && h.CryptMethod != CryptLUKS {
			// Refused where QEMU meets it, before the next extension.
			return nil, corruptQ("crypto_header", uint64(h.CryptMethod), "CRYPTO header extension only expected with LUKS encryption method",
				"crypto header extension with crypt_method %d", h.CryptMethod)
		}
		if typ == ExtCrypto && n != CryptoHeaderLen {
			return nil, corruptQ("crypto_header", n, fmt.Sprintf("CRYPTO header extension size %d, but expected size %d", n, CryptoHeaderLen),
				"crypto header extension of %d bytes, want %d", n, CryptoHeaderLen)
		}
		if typ == ExtBitmaps && n != 24 {
			// Whatever the autoclear bit says, as QEMU checks it.
			return nil, corruptQ("header_extension", n, "bitmaps_ext: Invalid extension length", "bitmaps extension of %d bytes, want 24", n)
		}
		if typ == ExtBackingFmt && n >= 16 {
			// QEMU's backing format holds 15 characters and a NUL.
			return nil, corruptQ("header_extension", n, fmt.Sprintf("ERROR: ext_backing_format: len=%d too large (>=16)", n),
				"backing format extension of %d bytes (at most 15)", n)
		}
		exts = append(exts, Extension{Type: typ, Data: append([]byte(nil), b[off:off+n]...)})
		off += (n + 7) &^ 7
		if len(exts) > 1024 {
			return nil, corrupt("header_extension", uint64(typ), "too many extensions")
		}
	}
}

// SetExtension replaces (or adds, or with data == nil removes) the
// extension of type typ.
func (h *Header) SetExtension(typ uint32, data []byte) {
	out := h.Extensions[:0:0]
	done := false
	for _, e := range h.Extensions {
		if e.Type == typ {
			if data != nil && !done {
				out = append(out, Extension{Type: typ, Data: data})
				done = true
			}
			continue
		}
		out = append(out, e)
	}
	if data != nil && !done {
		out = append(out, Extension{Type: typ, Data: data})
	}
	h.Extensions = out
}

// FeatureNameTable is the extension QEMU writes, naming every feature bit
// we know.
func FeatureNameTable() []byte {
	type fn struct {
		typ, bit uint8
		name     string
	}
	t := []fn{
		{0, 0, "dirty bit"}, {0, 1, "corrupt bit"}, {0, 2, "external data file"},
		{0, 3, "compression type"}, {0, 4, "extended L2 entries"},
		{1, 0, "lazy refcounts"},
		{2, 0, "bitmaps"}, {2, 1, "raw external data"},
	}
	b := make([]byte, 48*len(t))
	for i, f := range t {
		b[i*48] = f.typ
		b[i*48+1] = f.bit
		copy(b[i*48+2:i*48+48], f.name)
	}
	return b
}

// Encode writes the header, its extensions and the backing file name into
// a buffer of one cluster. It sets HeaderLength (v3: at least
// QEMUHeaderLen plus the unknown fields) and BackingFileOffset/Size, and
// replaces Extensions with the list it wrote: BackingFormat and DataFile
// at the position of their first extension (or appended), later
// duplicates and empty ones dropped. So ParseHeader(Encode(h)) equals h.
// The feature-name table is informational: when the cluster cannot hold
// it with everything else (512-byte clusters with a backing file), it is
// left out, as QEMU does.
func (h *Header) Encode() ([]byte, error) {
	b, err := h.encode()
	if err == nil {
		return b, nil
	}
	rest := make([]Extension, 0, len(h.Extensions))
	for _, e := range h.Extensions {
		if e.Type != ExtFeatureNames {
			rest = append(rest, e)
		}
	}
	if len(rest) == len(h.Extensions) {
		return nil, err
	}
	saved := h.Extensions
	h.Extensions = rest
	if b, err2 := h.encode(); err2 == nil {
		return b, nil
	}
	h.Extensions = saved
	return nil, err
}

func (h *Header) encode() ([]byte, error) { return h.encodeAt(0) }

// encodeAt is encode with the backing file name at nameAt (0: right
// after the extension list, where QEMU puts it; else no earlier).
func (h *Header) encodeAt(nameAt uint64) ([]byte, error) {
	cs := h.ClusterSize()
	if cs == 0 || h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, unsupported("cluster_bits", uint64(h.ClusterBits), "must be in [%d, %d]", MinClusterBits, MaxClusterBits)
	}
	b := make([]byte, cs)
	var hl uint64
	switch h.Version {
	case 2:
		hl = V2HeaderLen
		if h.RefcountOrder != 4 {
			return nil, unsupported("refcount_order", uint64(h.RefcountOrder), "version 2 needs 16-bit refcounts")
		}
		if h.IncompatibleFeatures|h.CompatibleFeatures|h.AutoclearFeatures != 0 {
			return nil, unsupported("incompatible_features", h.IncompatibleFeatures, "version 2 has no feature bits")
		}
	case 3:
		hl = QEMUHeaderLen + uint64(len(h.UnknownFields))
		hl = (hl + 7) &^ 7
	default:
		return nil, unsupported("version", uint64(h.Version), "only versions 2 and 3 exist")
	}
	be.PutUint32(b[0:], Magic)
	be.PutUint32(b[4:], h.Version)
	be.PutUint32(b[20:], h.ClusterBits)
	be.PutUint64(b[24:], h.Size)
	be.PutUint32(b[32:], h.CryptMethod)
	be.PutUint32(b[36:], h.L1Size)
	be.PutUint64(b[40:], uint64(h.L1TableOffset))
	be.PutUint64(b[48:], uint64(h.RefcountTableOffset))
	be.PutUint32(b[56:], h.RefcountTableClusters)
	be.PutUint32(b[60:], h.NbSnapshots)
	be.PutUint64(b[64:], uint64(h.SnapshotsOffset))
	if h.Version == 3 {
		be.PutUint64(b[72:], h.IncompatibleFeatures)
		be.PutUint64(b[80:], h.CompatibleFeatures)
		be.PutUint64(b[88:], h.AutoclearFeatures)
		be.PutUint32(b[96:], h.RefcountOrder)
		be.PutUint32(b[100:], uint32(hl))
		b[104] = h.CompressionType
		copy(b[QEMUHeaderLen:], h.UnknownFields)
	}
	off := hl
	var written []Extension
	put := func(typ uint32, data []byte) error {
		n := uint64(len(data))
		if off+8+((n+7)&^7) > cs {
			return unsupported("header_extension", uint64(typ), "header extensions do not fit in one cluster")
		}
		be.PutUint32(b[off:], typ)
		be.PutUint32(b[off+4:], uint32(n))
		copy(b[off+8:], data)
		off += 8 + ((n + 7) &^ 7)
		if typ != ExtEnd {
			written = append(written, Extension{Type: typ, Data: data})
		}
		return nil
	}
	// Known extensions come from the fields; others verbatim, in order.
	seenFmt, seenDF := false, false
	for _, e := range h.Extensions {
		switch e.Type {
		case ExtEnd:
			// Would end the list early and lose what follows.
			return nil, unsupported("header_extension", ExtEnd, "end marker in the extension list")
		case ExtBackingFmt:
			if seenFmt || h.BackingFormat == "" {
				seenFmt = true
				continue
			}
			seenFmt = true
			if err := put(e.Type, []byte(h.BackingFormat)); err != nil {
				return nil, err
			}
		case ExtDataFile:
			if seenDF || h.DataFile == "" {
				seenDF = true
				continue
			}
			seenDF = true
			if err := put(e.Type, []byte(h.DataFile)); err != nil {
				return nil, err
			}
		default:
			if err := put(e.Type, e.Data); err != nil {
				return nil, err
			}
		}
	}
	if !seenFmt && h.BackingFormat != "" {
		if err := put(ExtBackingFmt, []byte(h.BackingFormat)); err != nil {
			return nil, err
		}
	}
	if !seenDF && h.DataFile != "" {
		if err := put(ExtDataFile, []byte(h.DataFile)); err != nil {
			return nil, err
		}
	}
	if err := put(ExtEnd, nil); err != nil {
		return nil, err
	}
	var bfo uint64
	var bfs uint32
	if h.BackingFile != "" {
		n := uint64(len(h.BackingFile))
		if n > MaxBackingName {
			return nil, unsupported("backing_file_size", n, "backing file name longer than %d bytes", MaxBackingName)
		}
		if nameAt != 0 {
			if nameAt < off {
				return nil, unsupported("backing_file_offset", nameAt, "backing file name inside the extensions")
			}
			off = nameAt
		}
		if off+n > cs {
			return nil, unsupported("backing_file_offset", off, "backing file name does not fit in the header cluster")
		}
		copy(b[off:], h.BackingFile)
		bfo, bfs = off, uint32(n)
	}
	be.PutUint64(b[8:], bfo)
	be.PutUint32(b[16:], bfs)
	// Update h only once the encoding has succeeded.
	h.HeaderLength = uint32(hl)
	h.BackingFileOffset, h.BackingFileSize = bfo, bfs
	h.Extensions = written
	return b, nil
}

// Geometry derives the image geometry from the header (FM4).
func (h *Header) Geometry() Geometry {
	return NewGeometry(h.ClusterBits, h.RefcountOrder, h.ExtendedL2())
}

// ClearUnknownAutoclear clears the autoclear bits this package does not
// know, as a writer must before its first header update (QEMU does so on
// a writable open), and reports whether any were set.
func (h *Header) ClearUnknownAutoclear() bool {
	unk := h.AutoclearFeatures &^ AutoclearKnown
	h.AutoclearFeatures &^= unk
	return unk != 0
}

// ilog2 of a power of two.
func ilog2(x uint64) uint32 { return uint32(bits.TrailingZeros64(x)) }
