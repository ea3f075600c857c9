package luks

import (
	"crypto/aes"
	"errors"

	"golang.org/x/crypto/xts"
)

// ErrAlignment: a buffer given to EncryptSectors or DecryptSectors is not
// a whole number of 512-byte sectors.
var ErrAlignment = errors.New("luks: buffer is not a whole number of 512-byte sectors")

// Cipher encrypts and decrypts 512-byte sectors in place with one key
// (the master key of a volume, or a key slot's derived key). It is safe
// for concurrent use.
type Cipher struct {
	x  *xts.Cipher
	iv ivGen
}

func newCipher(spec cipherSpec, key []byte) (*Cipher, error) {
	x, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, err
	}
	return &Cipher{x: x, iv: spec.iv}, nil
}

func (c *Cipher) tweak(sector uint64) uint64 {
	if c.iv == ivPlain {
		return sector & 0xffffffff
	}
	return sector
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
	for i := 0; i < len(buf); i += SectorSize {
		s := buf[i : i+SectorSize]
		if tw := c.tweak(firstSector + uint64(i/SectorSize)); encrypt {
			c.x.Encrypt(s, s, tw)
		} else {
			c.x.Decrypt(s, s, tw)
		}
	}
	return nil
}

// cryptMaterial en- or decrypts key material as QEMU's
// qcrypto_block_cipher_*_helper does: in 512-byte units numbered from 0,
// the last unit possibly shorter (always a multiple of 16 bytes here:
// the key sizes are).
func (c *Cipher) cryptMaterial(b []byte, encrypt bool) {
	for i, n := 0, 0; i < len(b); i, n = i+SectorSize, n+1 {
		s := b[i:min(i+SectorSize, len(b))]
		if encrypt {
			c.x.Encrypt(s, s, c.tweak(uint64(n)))
		} else {
			c.x.Decrypt(s, s, c.tweak(uint64(n)))
		}
	}
}
