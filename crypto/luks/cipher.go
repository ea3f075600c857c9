package luks

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// ErrAlignment: a buffer given to EncryptSectors or DecryptSectors is not
// a whole number of 512-byte sectors.
var ErrAlignment = errors.New("luks: buffer is not a whole number of 512-byte sectors")

// Cipher encrypts and decrypts 512-byte sectors in place with one key
// (the master key of a volume, or a key slot's derived key), each sector
// on its own with the IV its number gives, as QEMU's
// qcrypto_block_cipher_encrypt_helper. It is safe for concurrent use:
// the block ciphers are, and every call keeps its chaining state on its
// own.
type Cipher struct {
	spec  cipherSpec
	k1    cipher.Block // the data key (XTS: the first half of the key)
	k2    cipher.Block // XTS: the tweak key, the second half
	essiv cipher.Block // essiv: the IV cipher, keyed by the hash of the key
}

func newCipher(spec cipherSpec, key []byte) (*Cipher, error) {
	c := &Cipher{spec: spec}
	data := key
	var err error
	if spec.mode == modeXTS {
		if spec.alg.blockSize != 16 {
			return nil, qemuErr(ErrUnsupported, "cipher_mode", "Unsupported cipher mode xts")
		}
		data = key[:len(key)/2]
		if c.k2, err = spec.alg.new(key[len(key)/2:]); err != nil {
			return nil, err
		}
	}
	if c.k1, err = spec.alg.new(data); err != nil {
		return nil, err
	}
	if spec.iv == ivEssiv {
		// QEMU's qcrypto_ivgen_essiv_init: the hash of the whole key
		// (both XTS halves) keys the IV cipher, used in ECB mode.
		h := spec.essiv.new()
		h.Write(key)
		if c.essiv, err = spec.alg.new(h.Sum(nil)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// NewSectorCipher is the sector cipher of a LUKS cipher_name and
// cipher_mode (as "aes" and "cbc-plain64") under key, outside any LUKS
// header: qcow2's legacy AES encryption (crypt_method 1) is "aes" in
// "cbc-plain64" mode under a 16-byte key this way.
func NewSectorCipher(name, mode string, key []byte) (*Cipher, error) {
	h := &Header{CipherName: name, CipherMode: mode, HashSpec: "sha256", KeyBytes: uint32(len(key))}
	spec, _, err := h.algs()
	if err != nil {
		return nil, err
	}
	return newCipher(spec, key)
}

// EncryptSectors encrypts buf in place; buf[0:512] is sector
// firstSector, the next 512 bytes firstSector+1, and so on. The sector
// number is the IV: for a raw LUKS volume the payload sector (guest
// offset / 512), for a qcow2 image the host offset / 512 (see the
// package doc).
func (c *Cipher) EncryptSectors(buf []byte, firstSector uint64) error {
	return c.cryptSectors(buf, firstSector, true)
}

// DecryptSectors decrypts buf in place; see EncryptSectors.
func (c *Cipher) DecryptSectors(buf []byte, firstSector uint64) error {
	return c.cryptSectors(buf, firstSector, false)
}

// cryptSectors en- or decrypts buf in place, sector by sector.
func (c *Cipher) cryptSectors(buf []byte, firstSector uint64, encrypt bool) error {
	if len(buf)%SectorSize != 0 {
		return ErrAlignment
	}
	var sc scratch
	for i := 0; i < len(buf); i += SectorSize {
		c.cryptUnit(&sc, buf[i:i+SectorSize], firstSector+uint64(i/SectorSize), encrypt)
	}
	return nil
}

// cryptMaterial en- or decrypts key material as QEMU's
// qcrypto_block_cipher_*_helper does: in 512-byte units numbered from 0,
// the last unit possibly shorter (always a whole number of cipher blocks:
// key bytes x 4000 stripes is a multiple of 16).
func (c *Cipher) cryptMaterial(b []byte, encrypt bool) {
	var sc scratch
	for i, n := 0, uint64(0); i < len(b); i, n = i+SectorSize, n+1 {
		c.cryptUnit(&sc, b[i:min(i+SectorSize, len(b))], n, encrypt)
	}
}

// scratch is one call's chaining state (one cipher block each), kept out
// of cryptUnit so that a call allocates it once.
type scratch struct {
	iv, t, prev, cur [16]byte
}

// cryptUnit en- or decrypts s (whole cipher blocks) in place as unit n.
func (c *Cipher) cryptUnit(sc *scratch, s []byte, n uint64, encrypt bool) {
	bs := c.spec.alg.blockSize
	iv := sc.iv[:bs]
	clear(iv)
	switch c.spec.iv {
	case ivPlain:
		binary.LittleEndian.PutUint32(iv, uint32(n))
	case ivPlain64:
		binary.LittleEndian.PutUint64(iv, n)
	case ivEssiv:
		if c.spec.mode != modeECB {
			binary.LittleEndian.PutUint64(iv, n)
			c.essiv.Encrypt(iv, iv)
		}
	}
	switch c.spec.mode {
	case modeECB: // no IV: QEMU's ECB takes none
		for i := 0; i < len(s); i += bs {
			b := s[i : i+bs]
			if encrypt {
				c.k1.Encrypt(b, b)
			} else {
				c.k1.Decrypt(b, b)
			}
		}
	case modeCBC:
		prev, cur := sc.prev[:bs], sc.cur[:bs]
		copy(prev, iv)
		for i := 0; i < len(s); i += bs {
			b := s[i : i+bs]
			if encrypt {
				subtle.XORBytes(b, b, prev)
				c.k1.Encrypt(b, b)
				copy(prev, b)
			} else {
				copy(cur, b)
				c.k1.Decrypt(b, b)
				subtle.XORBytes(b, b, prev)
				copy(prev, cur)
			}
		}
	case modeCTR: // the IV is the first counter block, big-endian increments
		ks := sc.t[:bs]
		for i := 0; i < len(s); i += bs {
			c.k1.Encrypt(ks, iv)
			subtle.XORBytes(s[i:i+bs], s[i:i+bs], ks)
			for j := bs - 1; j >= 0; j-- {
				if iv[j]++; iv[j] != 0 {
					break
				}
			}
		}
	case modeXTS: // IEEE P1619: the tweak is the IV under the second key
		t := sc.t[:]
		c.k2.Encrypt(t, iv)
		for i := 0; i < len(s); i += 16 {
			b := s[i : i+16]
			subtle.XORBytes(b, b, t)
			if encrypt {
				c.k1.Encrypt(b, b)
			} else {
				c.k1.Decrypt(b, b)
			}
			subtle.XORBytes(b, b, t)
			mulAlpha(&sc.t)
		}
	}
}

// mulAlpha multiplies an XTS tweak by the primitive element of
// GF(2^128), the tweak read as a little-endian number.
func mulAlpha(t *[16]byte) {
	var carry byte
	for j := range t {
		next := t[j] >> 7
		t[j] = t[j]<<1 | carry
		carry = next
	}
	if carry != 0 {
		t[0] ^= 0x87
	}
}
