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
		a, b, cc, d := sboxes[(35-i)&7](w[8+4*i], w[9+4*i], w[10+4*i], w[11+4*i])
		c.k[i] = block{a, b, cc, d}
	}
	return c, nil
}

func (c *serpentCipher) BlockSize() int { return BlockSize }

// Encrypt runs the 32 rounds in four groups of eight, each S-box called
// by name with the block in four locals (registers): through a table of
// functions and a [4]uint32 it ran at a third of the speed.
func (c *serpentCipher) Encrypt(dst, src []byte) {
	x := load(src)
	x0, x1, x2, x3 := x[0], x[1], x[2], x[3]
	k := &c.k
	for r := 0; r < 32; r += 8 {
		x0, x1, x2, x3 = s0(x0^k[r][0], x1^k[r][1], x2^k[r][2], x3^k[r][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s1(x0^k[r+1][0], x1^k[r+1][1], x2^k[r+1][2], x3^k[r+1][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s2(x0^k[r+2][0], x1^k[r+2][1], x2^k[r+2][2], x3^k[r+2][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s3(x0^k[r+3][0], x1^k[r+3][1], x2^k[r+3][2], x3^k[r+3][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s4(x0^k[r+4][0], x1^k[r+4][1], x2^k[r+4][2], x3^k[r+4][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s5(x0^k[r+5][0], x1^k[r+5][1], x2^k[r+5][2], x3^k[r+5][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s6(x0^k[r+6][0], x1^k[r+6][1], x2^k[r+6][2], x3^k[r+6][3])
		x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		x0, x1, x2, x3 = s7(x0^k[r+7][0], x1^k[r+7][1], x2^k[r+7][2], x3^k[r+7][3])
		if r < 24 {
			x0, x1, x2, x3 = lt(x0, x1, x2, x3)
		}
	}
	block{x0 ^ k[32][0], x1 ^ k[32][1], x2 ^ k[32][2], x3 ^ k[32][3]}.store(dst)
}

// Decrypt is Encrypt backwards, with the inverse S-boxes.
func (c *serpentCipher) Decrypt(dst, src []byte) {
	x := load(src)
	k := &c.k
	x0, x1, x2, x3 := x[0]^k[32][0], x[1]^k[32][1], x[2]^k[32][2], x[3]^k[32][3]
	for r := 24; r >= 0; r -= 8 {
		if r < 24 {
			x0, x1, x2, x3 = invLT(x0, x1, x2, x3)
		}
		x0, x1, x2, x3 = i7(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+7][0], x1^k[r+7][1], x2^k[r+7][2], x3^k[r+7][3])
		x0, x1, x2, x3 = i6(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+6][0], x1^k[r+6][1], x2^k[r+6][2], x3^k[r+6][3])
		x0, x1, x2, x3 = i5(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+5][0], x1^k[r+5][1], x2^k[r+5][2], x3^k[r+5][3])
		x0, x1, x2, x3 = i4(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+4][0], x1^k[r+4][1], x2^k[r+4][2], x3^k[r+4][3])
		x0, x1, x2, x3 = i3(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+3][0], x1^k[r+3][1], x2^k[r+3][2], x3^k[r+3][3])
		x0, x1, x2, x3 = i2(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+2][0], x1^k[r+2][1], x2^k[r+2][2], x3^k[r+2][3])
		x0, x1, x2, x3 = i1(x0, x1, x2, x3)
		x0, x1, x2, x3 = invLT(x0^k[r+1][0], x1^k[r+1][1], x2^k[r+1][2], x3^k[r+1][3])
		x0, x1, x2, x3 = i0(x0, x1, x2, x3)
		x0, x1, x2, x3 = x0^k[r][0], x1^k[r][1], x2^k[r][2], x3^k[r][3]
	}
	block{x0, x1, x2, x3}.store(dst)
}

func load(b []byte) block {
	_ = b[15]
	return block{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]),
		binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])}
}

func (x block) store(b []byte) {
	_ = b[15]
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
}

// lt is the linear transformation.
func lt(x0, x1, x2, x3 uint32) (uint32, uint32, uint32, uint32) {
	x0 = bits.RotateLeft32(x0, 13)
	x2 = bits.RotateLeft32(x2, 3)
	x1 ^= x0 ^ x2
	x3 ^= x2 ^ x0<<3
	x1 = bits.RotateLeft32(x1, 1)
	x3 = bits.RotateLeft32(x3, 7)
	x0 ^= x1 ^ x3
	x2 ^= x3 ^ x1<<7
	x0 = bits.RotateLeft32(x0, 5)
	x2 = bits.RotateLeft32(x2, 22)
	return x0, x1, x2, x3
}

// invLT undoes lt, step by step in reverse.
func invLT(x0, x1, x2, x3 uint32) (uint32, uint32, uint32, uint32) {
	x2 = bits.RotateLeft32(x2, -22)
	x0 = bits.RotateLeft32(x0, -5)
	x2 ^= x3 ^ x1<<7
	x0 ^= x1 ^ x3
	x3 = bits.RotateLeft32(x3, -7)
	x1 = bits.RotateLeft32(x1, -1)
	x3 ^= x2 ^ x0<<3
	x1 ^= x0 ^ x2
	x2 = bits.RotateLeft32(x2, -3)
	x0 = bits.RotateLeft32(x0, -13)
	return x0, x1, x2, x3
}
