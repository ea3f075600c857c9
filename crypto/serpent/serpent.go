package serpent

import (
	"crypto/cipher"
	"encoding/binary"
	"math/bits"
	"strconv"
)

// BlockSize is Serpent's block size in bytes.
const BlockSize = 16

// KeySizeError is a key length NewCipher does not take.
type KeySizeError int

func (k KeySizeError) Error() string {
	return "serpent: invalid key size " + strconv.Itoa(int(k)) + " (16, 24 or 32 bytes)"
}

type block [4]uint32

// serpentCipher holds the 33 round keys.
type serpentCipher struct {
	k [33]block
}

// NewCipher returns Serpent keyed with a 16-, 24- or 32-byte key.
func NewCipher(key []byte) (cipher.Block, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, KeySizeError(len(key))
	}
	// w[0:8] is the padded key (the specification's w_-8..w_-1), w[8+i]
	// the prekey w_i.
	var w [8 + 132]uint32
	for i := 0; i < len(key)/4; i++ {
		w[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	if len(key) < 32 {
		w[len(key)/4] = 1
	}
	const phi = 0x9e3779b9
	for j := 8; j < len(w); j++ {
		w[j] = bits.RotateLeft32(w[j-8]^w[j-5]^w[j-3]^w[j-1]^phi^uint32(j-8), 11)
	}
	c := &serpentCipher{}
	for i := range c.k {
		// K_i = S_((3-i) mod 8)(w_4i .. w_4i+3).
		c.k[i] = sboxes[(35-i)&7](block{w[8+4*i], w[9+4*i], w[10+4*i], w[11+4*i]})
	}
	return c, nil
}

func (c *serpentCipher) BlockSize() int { return BlockSize }

func (c *serpentCipher) Encrypt(dst, src []byte) {
	x := load(src)
	for r := 0; r < 32; r++ {
		x.xor(&c.k[r])
		x = sboxes[r&7](x)
		if r < 31 {
			x.lt()
		} else {
			x.xor(&c.k[32])
		}
	}
	x.store(dst)
}

func (c *serpentCipher) Decrypt(dst, src []byte) {
	x := load(src)
	x.xor(&c.k[32])
	for r := 31; r >= 0; r-- {
		if r < 31 {
			x.invLT()
		}
		x = invSboxes[r&7](x)
		x.xor(&c.k[r])
	}
	x.store(dst)
}

func load(b []byte) block {
	_ = b[15]
	return block{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]),
		binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])}
}

func (x *block) store(b []byte) {
	_ = b[15]
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
}

func (x *block) xor(k *block) {
	for i := range x {
		x[i] ^= k[i]
	}
}

// lt is the linear transformation.
func (x *block) lt() {
	x[0] = bits.RotateLeft32(x[0], 13)
	x[2] = bits.RotateLeft32(x[2], 3)
	x[1] ^= x[0] ^ x[2]
	x[3] ^= x[2] ^ x[0]<<3
	x[1] = bits.RotateLeft32(x[1], 1)
	x[3] = bits.RotateLeft32(x[3], 7)
	x[0] ^= x[1] ^ x[3]
	x[2] ^= x[3] ^ x[1]<<7
	x[0] = bits.RotateLeft32(x[0], 5)
	x[2] = bits.RotateLeft32(x[2], 22)
}

// invLT undoes lt, step by step in reverse.
func (x *block) invLT() {
	x[2] = bits.RotateLeft32(x[2], -22)
	x[0] = bits.RotateLeft32(x[0], -5)
	x[2] ^= x[3] ^ x[1]<<7
	x[0] ^= x[1] ^ x[3]
	x[3] = bits.RotateLeft32(x[3], -7)
	x[1] = bits.RotateLeft32(x[1], -1)
	x[3] ^= x[2] ^ x[0]<<3
	x[1] ^= x[0] ^ x[2]
	x[2] = bits.RotateLeft32(x[2], -3)
	x[0] = bits.RotateLeft32(x[0], -13)
}
