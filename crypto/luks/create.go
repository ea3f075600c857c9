package luks

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"fmt"
	"io"
	"math"
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
	// KeyBytes is the master key length: 64 (aes-256-xts, QEMU's
	// default, also when 0), 48 (aes-192) or 32 (aes-128).
	KeyBytes uint32
	// Hash is the PBKDF2 and splitter hash (encrypt.hash-alg); default
	// "sha256".
	Hash string
	// IVGen is "plain64" (encrypt.ivgen-alg; the default) or "plain".
	IVGen string
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
	if o.KeyBytes == 0 {
		o.KeyBytes = 64
	}
	if o.Hash == "" {
		o.Hash = "sha256"
	}
	if o.IVGen == "" {
		o.IVGen = "plain64"
	}
	if o.IterTime == 0 {
		o.IterTime = DefaultIterTime
	}
	if o.IterTime < 0 {
		return nil, nil, nil, fmt.Errorf("luks: negative iter-time %v", o.IterTime)
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	h := &Header{
		Version:    1,
		CipherName: "aes",
		CipherMode: "xts-" + o.IVGen,
		HashSpec:   o.Hash,
		KeyBytes:   o.KeyBytes,
	}
	spec, err := lookupCipher(h.CipherName, h.CipherMode, h.KeyBytes)
	if err != nil {
		return nil, nil, nil, err
	}
	hh, err := lookupHash(h.HashSpec)
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
	matLen := int(h.KeyBytes) * Stripes
	splitSectors := uint32((matLen+keySlotAlign-1)/keySlotAlign) * headerSectors
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
