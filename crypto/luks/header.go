package luks

import (
	"bytes"
	"encoding/binary"
)

var be = binary.BigEndian

// LUKS1 constants (the on-disk format specification; QEMU's
// crypto/block-luks.c uses the same values).
const (
	// HeaderSize is the size of the LUKS1 partition header (phdr) with
	// its eight key slot descriptors.
	HeaderSize = 592
	// SectorSize is the unit of the payload and key material offsets and
	// of the payload encryption.
	SectorSize = 512
	// NumKeySlots is the number of key slots in a LUKS1 header.
	NumKeySlots = 8
	// Stripes is the anti-forensic stripe count every LUKS1 writer uses.
	Stripes = 4000
	// SaltLen is the length of the PBKDF2 salts.
	SaltLen = 32
	// DigestLen is the length of the master key digest.
	DigestLen = 20
	// SlotEnabled and SlotDisabled are the two legal key slot states.
	SlotEnabled  = 0x00AC71F3
	SlotDisabled = 0x0000DEAD
	// keySlotAlign is QEMU's QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET: the
	// first key material starts at 4096 bytes and each slot's material
	// is rounded up to a multiple of it (as cryptsetup does).
	keySlotAlign = 4096
	nameLen      = 32
	uuidLen      = 40
)

// Magic is the LUKS magic, "LUKS\xba\xbe".
var Magic = [6]byte{'L', 'U', 'K', 'S', 0xba, 0xbe}

// Field offsets in the phdr (big-endian, as the specification's table).
const (
	offVersion    = 6
	offCipherName = 8
	offCipherMode = 40
	offHashSpec   = 72
	offPayload    = 104
	offKeyBytes   = 108
	offMKDigest   = 112
	offMKSalt     = 132
	offMKIter     = 164
	offUUID       = 168
	offSlots      = 208
	slotSize      = 48
)

// KeySlot is one key slot descriptor.
type KeySlot struct {
	Active     uint32 // SlotEnabled or SlotDisabled
	Iterations uint32 // PBKDF2 iterations of the passphrase
	Salt       [SaltLen]byte
	// KeyMaterialOffset is the first sector of the slot's encrypted,
	// anti-forensically split copy of the master key, relative to the
	// start of the header.
	KeyMaterialOffset uint32
	Stripes           uint32
}

// Enabled reports whether the slot holds a copy of the master key.
func (s *KeySlot) Enabled() bool { return s.Active == SlotEnabled }

// Header is a decoded LUKS1 header. ParseHeader checks it; a Header
// built by hand is checked by Encode.
type Header struct {
	Version    uint16
	CipherName string // "aes"
	CipherMode string // "xts-plain64"
	HashSpec   string // "sha256"
	// PayloadOffset is the first sector of the encrypted payload in a
	// raw LUKS volume; in a qcow2 image it is the length of the header
	// area in sectors (the payload lives in data clusters).
	PayloadOffset      uint32
	KeyBytes           uint32 // master key length
	MKDigest           [DigestLen]byte
	MKDigestSalt       [SaltLen]byte
	MKDigestIterations uint32
	UUID               string
	Slots              [NumKeySlots]KeySlot
}

// PayloadBytes is the payload offset in bytes: where a raw volume's data
// starts, and the size of the header area.
func (h *Header) PayloadBytes() uint64 { return uint64(h.PayloadOffset) * SectorSize }

// ParseHeader decodes and validates the LUKS1 header at the start of b.
// It checks what QEMU's qcrypto_block_luks_check_header and
// qcrypto_block_luks_parse_header check, in their order and, where
// QEMU checks the same, with QEMU's message (FieldError.Qemu): magic,
// version, NUL-terminated names, the payload and key slot layout, then
// the algorithms. It never panics. Errors are *FieldError wrapping
// ErrNotLUKS, ErrVersion, ErrUnsupported or ErrCorrupt.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < len(Magic) || !bytes.Equal(b[:len(Magic)], Magic[:]) {
		return nil, qemuErr(ErrNotLUKS, "magic", "Volume is not in LUKS format")
	}
	if len(b) < offCipherName {
		return nil, fieldErr(ErrCorrupt, "version", "header truncated at %d bytes", len(b))
	}
	if v := be.Uint16(b[offVersion:]); v != 1 {
		return nil, qemuErr(ErrVersion, "version", "LUKS version %d is not supported", v)
	}
	if len(b) < HeaderSize {
		return nil, fieldErr(ErrCorrupt, "header", "header truncated at %d bytes (need %d)", len(b), HeaderSize)
	}
	for _, f := range []struct {
		field, name string
		off         int
	}{{"cipher_name", "cipher name", offCipherName}, {"cipher_mode", "cipher mode", offCipherMode}, {"hash_spec", "hash spec", offHashSpec}} {
		if bytes.IndexByte(b[f.off:f.off+nameLen], 0) < 0 {
			return nil, qemuErr(ErrCorrupt, f.field, "LUKS header %s is not NUL terminated", f.name)
		}
	}
	h := &Header{}
	*h = decodeHeader(b)
	if err := h.validate(); err != nil {
		return nil, err
	}
	return h, nil
}

// decodeHeader decodes the HeaderSize bytes of b, unchecked.
func decodeHeader(b []byte) Header {
	h := Header{Version: be.Uint16(b[offVersion:])}
	h.CipherName = cstring(b[offCipherName : offCipherName+nameLen])
	h.CipherMode = cstring(b[offCipherMode : offCipherMode+nameLen])
	h.HashSpec = cstring(b[offHashSpec : offHashSpec+nameLen])
	h.PayloadOffset = be.Uint32(b[offPayload:])
	h.KeyBytes = be.Uint32(b[offKeyBytes:])
	copy(h.MKDigest[:], b[offMKDigest:])
	copy(h.MKDigestSalt[:], b[offMKSalt:])
	h.MKDigestIterations = be.Uint32(b[offMKIter:])
	h.UUID = cstring(b[offUUID : offUUID+uuidLen])
	for i := range h.Slots {
		p := b[offSlots+i*slotSize:]
		s := &h.Slots[i]
		s.Active = be.Uint32(p[0:])
		s.Iterations = be.Uint32(p[4:])
		copy(s.Salt[:], p[8:8+SaltLen])
		s.KeyMaterialOffset = be.Uint32(p[40:])
		s.Stripes = be.Uint32(p[44:])
	}
	return h
}

// validate checks the layout, then the algorithms (which bound KeyBytes
// to 64, so that a slot's key material is at most 256000 bytes), as
// QEMU's open does.
func (h *Header) validate() error {
	if h.Version != 1 {
		return qemuErr(ErrVersion, "version", "LUKS version %d is not supported", h.Version)
	}
	if err := h.validateLayout(); err != nil {
		return err
	}
	_, _, err := h.algs()
	return err
}

// validateLayout checks the payload offset, the master key digest
// iterations and the key slots, as QEMU's
// qcrypto_block_luks_check_header: slot by slot, each slot's overlaps
// with the later ones before the next slot.
func (h *Header) validateLayout() error {
	const headerSectors = keySlotAlign / SectorSize
	if h.PayloadOffset < headerSectors {
		return qemuErr(ErrCorrupt, "payload_offset", "LUKS payload is overlapping with the header")
	}
	if h.MKDigestIterations == 0 {
		return qemuErr(ErrCorrupt, "mk_digest_iter", "LUKS key iteration count is zero")
	}
	// QEMU's qcrypto_block_luks_splitkeylen_sectors: the material
	// rounded up to sectors, then to the header alignment.
	span := func(s *KeySlot) (start, end uint64) {
		n := (uint64(h.KeyBytes)*uint64(s.Stripes) + SectorSize - 1) / SectorSize
		n = (n + headerSectors - 1) / headerSectors * headerSectors
		return uint64(s.KeyMaterialOffset), uint64(s.KeyMaterialOffset) + n
	}
	for i := range h.Slots {
		s := &h.Slots[i]
		if s.Stripes != Stripes {
			// Disabled slots too, as QEMU.
			return qemuErr(ErrCorrupt, "key_slot", "Keyslot %d is corrupted (stripes %d != %d)", i, s.Stripes, Stripes)
		}
		if s.Active != SlotEnabled && s.Active != SlotDisabled {
			return qemuErr(ErrCorrupt, "key_slot", "Keyslot %d state (active/disable) is corrupted", i)
		}
		if s.Enabled() && s.Iterations == 0 {
			return qemuErr(ErrCorrupt, "key_slot", "Keyslot %d iteration count is zero", i)
		}
		start, end := span(s)
		if start < headerSectors {
			return qemuErr(ErrCorrupt, "key_slot", "Keyslot %d is overlapping with the LUKS header", i)
		}
		if end > uint64(h.PayloadOffset) {
			return qemuErr(ErrCorrupt, "key_slot", "Keyslot %d is overlapping with the encrypted payload", i)
		}
		for j := i + 1; j < NumKeySlots; j++ {
			if s2, e2 := span(&h.Slots[j]); start < e2 && s2 < end {
				return qemuErr(ErrCorrupt, "key_slot", "Keyslots %d and %d are overlapping in the header", i, j)
			}
		}
	}
	return nil
}

// Encode returns the 592-byte phdr. It validates the header first, so
// that a header Encode accepts parses back equal.
func (h *Header) Encode() ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, v string
		n       int
	}{{"cipher_name", h.CipherName, nameLen}, {"cipher_mode", h.CipherMode, nameLen}, {"hash_spec", h.HashSpec, nameLen}, {"uuid", h.UUID, uuidLen}} {
		if len(f.v) >= f.n || bytes.IndexByte([]byte(f.v), 0) >= 0 {
			return nil, fieldErr(ErrCorrupt, f.name, "%q does not fit a NUL-terminated field of %d bytes", f.v, f.n)
		}
	}
	b := make([]byte, HeaderSize)
	copy(b, Magic[:])
	be.PutUint16(b[offVersion:], h.Version)
	copy(b[offCipherName:], h.CipherName)
	copy(b[offCipherMode:], h.CipherMode)
	copy(b[offHashSpec:], h.HashSpec)
	be.PutUint32(b[offPayload:], h.PayloadOffset)
	be.PutUint32(b[offKeyBytes:], h.KeyBytes)
	copy(b[offMKDigest:], h.MKDigest[:])
	copy(b[offMKSalt:], h.MKDigestSalt[:])
	be.PutUint32(b[offMKIter:], h.MKDigestIterations)
	copy(b[offUUID:], h.UUID)
	for i := range h.Slots {
		p := b[offSlots+i*slotSize:]
		s := &h.Slots[i]
		be.PutUint32(p[0:], s.Active)
		be.PutUint32(p[4:], s.Iterations)
		copy(p[8:], s.Salt[:])
		be.PutUint32(p[40:], s.KeyMaterialOffset)
		be.PutUint32(p[44:], s.Stripes)
	}
	return b, nil
}

// cstring is the NUL-terminated string in a fixed field (the whole field
// if it has no NUL).
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
