package luks

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// QEMU's defaults (crypto/block-luks.c).
const (
	// DefaultIterTime is QEMU's iter-time default: PBKDF2 iterations
	// worth 2000 ms for the key slot (and 2000/8 ms for the master key
	// digest).
	DefaultIterTime = 2000 * time.Millisecond
	// MinIterations is QEMU's floor for a computed iteration count.
	MinIterations = 1000
)

// CreateOptions are the encrypt.* create options QEMU takes.
type CreateOptions struct {
	// Cipher is the cipher in QEMU's names (encrypt.cipher-alg):
	// aes-256 (the default), aes-192, aes-128, the same sizes of twofish
	// and serpent, or cast5-128.
	Cipher string
	// Mode is the cipher mode (encrypt.cipher-mode): xts (the default),
	// cbc, ecb or ctr.
	Mode string
	// IVGen is the IV generator (encrypt.ivgen-alg): plain64 (the
	// default), plain or essiv. IVHash (encrypt.ivgen-hash-alg) is
	// essiv's hash, default sha256; given with plain or plain64 it is
	// written into the header and ignored, as QEMU does.
	IVGen, IVHash string
	// Hash is the PBKDF2 and splitter hash (encrypt.hash-alg); default
	// "sha256".
	Hash string
	// IterTime is encrypt.iter-time: the slot's PBKDF2 iterations are
	// measured to take this long (default DefaultIterTime), the master
	// key digest's an eighth of it, neither fewer than MinIterations.
	IterTime time.Duration
	// Iterations, if not 0, is used for the slot and the digest instead
	// of measuring (tests).
	Iterations uint32
	// Rand is the source of the master key, salts, stripes and UUID;
	// default crypto/rand.Reader.
	Rand io.Reader
}

// Create makes a LUKS1 header with key slot 0 opened by passphrase, laid
// out as QEMU's qcrypto_block_luks_create does: the phdr in the first
// 4096 bytes, the key material of slot i at 4096 bytes plus i times the
// material size rounded up to 4096, the payload after the eighth slot.
// It returns the header, the header area (PayloadBytes() long: the phdr,
// slot 0's material, zeros elsewhere) to write at the start of a raw
// volume or into the clusters of a qcow2 crypto header extension, and
// the payload cipher.
func Create(passphrase []byte, o CreateOptions) (*Header, []byte, *Cipher, error) {
	if o.IterTime == 0 {
		o.IterTime = DefaultIterTime
	}
	if o.IterTime < 0 {
		return nil, nil, nil, fmt.Errorf("luks: negative iter-time %v", o.IterTime)
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	h, spec, hh, err := o.header()
	if err != nil {
		return nil, nil, nil, err
	}
	var u [16]byte
	mk := make([]byte, h.KeyBytes)
	for _, b := range [][]byte{u[:], mk, h.MKDigestSalt[:]} {
		if _, err := io.ReadFull(o.Rand, b); err != nil {
			return nil, nil, nil, fmt.Errorf("luks: random bytes: %w", err)
		}
	}
	u[6] = u[6]&0x0f | 0x40 // RFC 4122 version 4
	u[8] = u[8]&0x3f | 0x80
	h.UUID = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])

	mkIter, slotIter := o.Iterations, o.Iterations
	if o.Iterations == 0 {
		// QEMU measures with qcrypto_pbkdf2_count_iters once per output
		// length; PBKDF2's cost grows with the number of hash-sized
		// output blocks, so one measurement serves both.
		perBlock, err := pbkdf2PerSecond(hh)
		if err != nil {
			return nil, nil, nil, err
		}
		blocks := func(n int) uint64 { return uint64((n + hh.size - 1) / hh.size) }
		ms := uint64(o.IterTime / time.Millisecond)
		if mkIter, err = scaleIters(perBlock/blocks(DigestLen), ms, 8); err != nil {
			return nil, nil, nil, err
		}
		if slotIter, err = scaleIters(perBlock/blocks(int(h.KeyBytes)), ms, 1); err != nil {
			return nil, nil, nil, err
		}
	}
	h.MKDigestIterations = mkIter
	d, err := pbkdf2.Key(hh.new, string(mk), h.MKDigestSalt[:], int(mkIter), DigestLen)
	if err != nil {
		return nil, nil, nil, err
	}
	copy(h.MKDigest[:], d)

	const headerSectors = keySlotAlign / SectorSize
	splitSectors := uint32(slotBytes(h.KeyBytes) / SectorSize)
	for i := range h.Slots {
		h.Slots[i] = KeySlot{Active: SlotDisabled, KeyMaterialOffset: headerSectors + uint32(i)*splitSectors, Stripes: Stripes}
	}
	if _, err := io.ReadFull(o.Rand, h.Slots[0].Salt[:]); err != nil {
		return nil, nil, nil, fmt.Errorf("luks: random bytes: %w", err)
	}
	h.PayloadOffset = headerSectors + NumKeySlots*splitSectors

	// Slot 0: derive, split, encrypt (qcrypto_block_luks_store_key).
	s := &h.Slots[0]
	s.Iterations = slotIter
	slotKey, err := pbkdf2.Key(hh.new, string(passphrase), s.Salt[:], int(slotIter), int(h.KeyBytes))
	if err != nil {
		return nil, nil, nil, err
	}
	split, err := afSplit(hh, mk, Stripes, o.Rand)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("luks: random bytes: %w", err)
	}
	sc, err := newCipher(spec, slotKey)
	if err != nil {
		return nil, nil, nil, err
	}
	sc.cryptMaterial(split, true)
	s.Active = SlotEnabled

	phdr, err := h.Encode()
	if err != nil {
		return nil, nil, nil, err
	}
	area := make([]byte, h.PayloadBytes())
	copy(area, phdr)
	copy(area[uint64(s.KeyMaterialOffset)*SectorSize:], split)
	c, err := newCipher(spec, mk)
	if err != nil {
		return nil, nil, nil, err
	}
	return h, area, c, nil
}

// OptionError is a create option, or a combination of them, refused in
// QEMU's words; it wraps the FieldError that says why where there is
// one (errors.Is: ErrUnsupported, ErrCorrupt).
type OptionError struct {
	Msg string
	Err error
}

func (e *OptionError) Error() string { return e.Msg }
func (e *OptionError) Unwrap() error { return e.Err }

// header starts the header o describes: its cipher, mode and hashes,
// checked with QEMU's words for what QEMU refuses
// (qcrypto_block_luks_create, qcrypto_block_luks_essiv_cipher).
func (o *CreateOptions) header() (*Header, cipherSpec, hashAlg, error) {
	if o.Cipher == "" {
		o.Cipher = "aes-256"
	}
	if o.Mode == "" {
		o.Mode = "xts"
	}
	if o.IVGen == "" {
		o.IVGen = "plain64"
	}
	if o.IVGen == "essiv" && o.IVHash == "" {
		o.IVHash = "sha256"
	}
	if o.Hash == "" {
		o.Hash = "sha256"
	}
	// In QEMU's order (qcrypto_block_luks_create): the cipher's name,
	// the header's algorithms with essiv's cipher, then the cipher itself
	// in its mode; last our refusal of what QEMU 7.2 aborts on.
	name, bits, _ := strings.Cut(o.Cipher, "-")
	alg := lookupBlockAlg(name)
	keyBytes := map[string]int{"128": 16, "192": 24, "256": 32}[bits]
	if alg == nil || !slices.Contains(alg.keyLens, keyBytes) {
		return nil, cipherSpec{}, hashAlg{}, &OptionError{fmt.Sprintf("Algorithm '%s' not supported", o.Cipher), ErrUnsupported}
	}
	mode := slices.Index(modeNames, o.Mode)
	if mode < 0 {
		return nil, cipherSpec{}, hashAlg{}, &OptionError{"Unsupported cipher mode " + o.Mode, ErrUnsupported}
	}
	if cipherMode(mode) == modeXTS {
		keyBytes *= 2
	}
	cm := o.Mode + "-" + o.IVGen
	if o.IVHash != "" {
		cm += ":" + o.IVHash
	}
	h := &Header{Version: 1, CipherName: name, CipherMode: cm, HashSpec: o.Hash, KeyBytes: uint32(keyBytes)}
	spec, hh, err := h.algs()
	if err != nil {
		return nil, cipherSpec{}, hashAlg{}, &OptionError{QemuText(err), err}
	}
	if spec.mode == modeXTS && alg.blockSize != 16 {
		return nil, cipherSpec{}, hashAlg{}, &OptionError{"Unsupported cipher mode xts", ErrUnsupported}
	}
	if keyBytes*Stripes%SectorSize != 0 {
		// QEMU 7.2 encrypts key material in whole sectors and aborts
		// on such a slot (an assertion in qcrypto_block_cipher_*),
		// creating the volume and opening one cryptsetup made alike.
		return nil, cipherSpec{}, hashAlg{}, &OptionError{fmt.Sprintf("%s in %s mode is not supported: its key material (%d bytes) is not whole 512-byte sectors, and QEMU cannot open such a volume", o.Cipher, o.Mode, keyBytes*Stripes), ErrUnsupported}
	}
	return h, spec, hh, nil
}

// AreaBytes is the size of the header area (the payload offset) of a
// volume made with o: the phdr's 4096 bytes and eight slots of key
// material, each rounded up to 4096 bytes.
func AreaBytes(o CreateOptions) (uint64, error) {
	h, _, _, err := o.header()
	if err != nil {
		return 0, err
	}
	return keySlotAlign + NumKeySlots*slotBytes(h.KeyBytes), nil
}

// slotBytes is the room one slot's key material takes in a header
// area QEMU lays out.
func slotBytes(keyBytes uint32) uint64 {
	return (uint64(keyBytes)*Stripes + keySlotAlign - 1) / keySlotAlign * keySlotAlign
}

// scaleIters turns a rate (iterations per second) into the count for ms
// milliseconds divided by div, as QEMU does, with its floor and its
// uint32 ceiling.
func scaleIters(perSecond, ms, div uint64) (uint32, error) {
	if ms != 0 && perSecond > math.MaxUint64/ms {
		return 0, fmt.Errorf("luks: PBKDF2 iterations %d too large to scale", perSecond)
	}
	n := perSecond * ms / 1000 / div
	if n > math.MaxUint32 {
		return 0, fmt.Errorf("luks: PBKDF2 iterations %d larger than %d", n, uint64(math.MaxUint32))
	}
	return uint32(max(n, MinIterations)), nil
}

// measureFloor is how long the PBKDF2 rate is measured (QEMU's
// qcrypto_pbkdf2_count_iters: over 500 ms of thread CPU time; this
// measures wall time).
const measureFloor = 500 * time.Millisecond

// pbkdf2PerSecond measures PBKDF2 iterations per second for one
// hash-sized output block, growing the trial count as QEMU does.
func pbkdf2PerSecond(hh hashAlg) (uint64, error) {
	var key, salt [32]byte
	iters := 1 << 15
	for {
		t := time.Now()
		if _, err := pbkdf2.Key(hh.new, string(key[:]), salt[:], iters, hh.size); err != nil {
			return 0, err
		}
		d := time.Since(t)
		switch {
		case d > measureFloor:
			return uint64(float64(iters) / d.Seconds()), nil
		case d < measureFloor/5:
			iters *= 10
		default:
			iters = int(float64(iters) * float64(time.Second) / float64(d))
		}
	}
}
