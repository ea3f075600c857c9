package luks

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"fmt"
	"io"
	"time"
)

// Key slot management (QEMU's amend of a LUKS volume: add a passphrase,
// erase one). The caller writes what these return: a slot's new key
// material before the header that activates it, and the header that
// disables a slot before garbage over its old material
// (qcrypto_block_luks_store_key and _erase_key), so a crash leaves
// either the old set of keys or the new one working.

// SlotOptions say how AddSlot derives the new slot's key.
type SlotOptions struct {
	// IterTime is the PBKDF2 time to spend (default DefaultIterTime).
	IterTime time.Duration
	// Iterations, if not 0, is used instead of measuring (tests).
	Iterations uint32
	// Rand is the source of the salt and the stripes; default
	// crypto/rand.Reader.
	Rand io.Reader
}

// MasterKey returns the master key the first enabled slot that opens
// with passphrase holds (as Unlock finds it), or ErrWrongKey.
func (h *Header) MasterKey(r io.ReaderAt, passphrase []byte) ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	for i := range h.Slots {
		mk, err := h.SlotKey(r, i, passphrase)
		if err != nil || mk != nil {
			return mk, err
		}
	}
	return nil, ErrWrongKey
}

// SlotKey returns the master key slot i holds under passphrase, or nil
// when the slot is disabled or the passphrase does not open it.
func (h *Header) SlotKey(r io.ReaderAt, i int, passphrase []byte) ([]byte, error) {
	if i < 0 || i >= NumKeySlots {
		return nil, fmt.Errorf("luks: key slot %d out of range", i)
	}
	// A header built by hand is checked here too: its layout bounds
	// the key material openSlot reads and merges.
	if err := h.validate(); err != nil {
		return nil, err
	}
	s := &h.Slots[i]
	if !s.Enabled() {
		return nil, nil
	}
	spec, hh, err := h.algs()
	if err != nil {
		return nil, err
	}
	mk, err := h.openSlot(r, s, spec, hh, passphrase)
	if err != nil {
		return nil, fmt.Errorf("luks: key slot %d: %w", i, err)
	}
	return mk, nil
}

// AddSlot makes slot i hold mk under passphrase (a fresh salt, PBKDF2
// iterations for o.IterTime, the key split into Stripes stripes and
// encrypted) and enables it in h. It returns the key material to write
// at the slot's KeyMaterialOffset sectors, which must be written (and
// flushed) before h's encoding.
func (h *Header) AddSlot(i int, mk, passphrase []byte, o SlotOptions) ([]byte, error) {
	if i < 0 || i >= NumKeySlots {
		return nil, fmt.Errorf("luks: key slot %d out of range", i)
	}
	if len(mk) != int(h.KeyBytes) {
		return nil, fmt.Errorf("luks: master key of %d bytes, the header says %d", len(mk), h.KeyBytes)
	}
	spec, hh, err := h.algs()
	if err != nil {
		return nil, err
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.IterTime == 0 {
		o.IterTime = DefaultIterTime
	}
	iters := o.Iterations
	if iters == 0 {
		perBlock, err := pbkdf2PerSecond(hh)
		if err != nil {
			return nil, err
		}
		blocks := uint64((int(h.KeyBytes) + hh.size - 1) / hh.size)
		if iters, err = scaleIters(perBlock/blocks, uint64(o.IterTime/time.Millisecond), 1); err != nil {
			return nil, err
		}
	}
	s := h.Slots[i]
	if _, err := io.ReadFull(o.Rand, s.Salt[:]); err != nil {
		return nil, fmt.Errorf("luks: random bytes: %w", err)
	}
	s.Iterations, s.Stripes = iters, Stripes
	slotKey, err := pbkdf2.Key(hh.new, string(passphrase), s.Salt[:], int(iters), int(h.KeyBytes))
	if err != nil {
		return nil, err
	}
	split, err := afSplit(hh, mk, Stripes, o.Rand)
	if err != nil {
		return nil, fmt.Errorf("luks: random bytes: %w", err)
	}
	sc, err := newCipher(spec, slotKey)
	if err != nil {
		return nil, err
	}
	sc.cryptMaterial(split, true)
	s.Active = SlotEnabled
	h.Slots[i] = s
	return split, nil
}

// DisableSlot disables slot i in h (its salt and iterations cleared, as
// QEMU's erase does) and returns the length of its key material, which
// the caller overwrites with garbage once h's encoding is written.
func (h *Header) DisableSlot(i int) (int, error) {
	if i < 0 || i >= NumKeySlots {
		return 0, fmt.Errorf("luks: key slot %d out of range", i)
	}
	s := &h.Slots[i]
	n := int(h.KeyBytes) * int(s.Stripes)
	s.Salt = [SaltLen]byte{}
	s.Iterations = 0
	s.Active = SlotDisabled
	return n, nil
}

// ActiveSlots counts the enabled slots.
func (h *Header) ActiveSlots() int {
	n := 0
	for i := range h.Slots {
		if h.Slots[i].Enabled() {
			n++
		}
	}
	return n
}
