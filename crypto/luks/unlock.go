package luks

import (
	"crypto/pbkdf2"
	"crypto/subtle"
	"fmt"
	"io"
)

// Unlock finds the key slot that opens with passphrase and returns the
// payload cipher under the master key. r reads the header area: offset 0
// is the first byte of the LUKS header (for a raw volume the file, for
// qcow2 a section at the crypto header extension's offset). For each
// enabled slot, in order, as QEMU's qcrypto_block_luks_find_key: derive
// the slot key with PBKDF2, decrypt the key material, merge the stripes,
// and accept the result if its PBKDF2 digest equals the header's. No
// slot opening gives ErrWrongKey.
func (h *Header) Unlock(r io.ReaderAt, passphrase []byte) (*Cipher, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	spec, hh, _ := h.algs()
	for i := range h.Slots {
		s := &h.Slots[i]
		if !s.Enabled() {
			continue
		}
		mk, err := h.openSlot(r, s, spec, hh, passphrase)
		if err != nil {
			return nil, fmt.Errorf("luks: key slot %d: %w", i, err)
		}
		if mk != nil {
			return newCipher(spec, mk)
		}
	}
	return nil, ErrWrongKey
}

// openSlot returns the master key the slot holds under passphrase, or
// nil if the digest does not match.
func (h *Header) openSlot(r io.ReaderAt, s *KeySlot, spec cipherSpec, hh hashAlg, passphrase []byte) ([]byte, error) {
	kb := int(h.KeyBytes)
	slotKey, err := pbkdf2.Key(hh.new, string(passphrase), s.Salt[:], int(s.Iterations), kb)
	if err != nil {
		return nil, err
	}
	mat := make([]byte, kb*int(s.Stripes)) // capped by validate
	n, err := r.ReadAt(mat, int64(s.KeyMaterialOffset)*SectorSize)
	if n < len(mat) {
		if err == nil || err == io.EOF {
			err = fieldErr(ErrCorrupt, "key_slot", "key material at sector %d runs past the header area", s.KeyMaterialOffset)
		}
		return nil, err
	}
	c, err := newCipher(spec, slotKey)
	if err != nil {
		return nil, err
	}
	c.cryptMaterial(mat, false)
	mk := afMerge(hh, mat, int(s.Stripes))
	ok, err := h.checkDigest(hh, mk)
	if err != nil || !ok {
		return nil, err
	}
	return mk, nil
}

// checkDigest reports whether mk is the master key the header's digest
// was made from.
func (h *Header) checkDigest(hh hashAlg, mk []byte) (bool, error) {
	d, err := pbkdf2.Key(hh.new, string(mk), h.MKDigestSalt[:], int(h.MKDigestIterations), DigestLen)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(d, h.MKDigest[:]) == 1, nil
}
