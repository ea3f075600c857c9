package serpent

import "math/bits"

// tables are the eight S-boxes as the specification publishes them:
// S_i[x] for x = 0..15.
var tables = [8][16]uint8{
	{3, 8, 15, 1, 10, 6, 5, 11, 14, 13, 4, 2, 7, 0, 9, 12},
	{15, 12, 2, 7, 9, 0, 5, 10, 1, 11, 14, 8, 6, 13, 3, 4},
	{8, 6, 7, 9, 3, 12, 10, 15, 13, 1, 14, 4, 0, 11, 5, 2},
	{0, 15, 11, 8, 12, 9, 6, 3, 13, 1, 2, 4, 10, 7, 5, 14},
	{1, 15, 8, 3, 12, 0, 11, 6, 2, 5, 4, 10, 9, 14, 7, 13},
	{15, 5, 2, 11, 4, 10, 9, 12, 0, 3, 14, 8, 13, 6, 7, 1},
	{7, 2, 12, 5, 8, 4, 6, 11, 14, 9, 1, 15, 13, 3, 10, 0},
	{1, 13, 15, 0, 14, 8, 2, 11, 7, 4, 12, 10, 9, 3, 5, 6},
}

// anf is one S-box in algebraic normal form: output bit b is the XOR
// of the monomials m (bit m set in anf[b]), monomial m being the AND of
// the input bits set in m (m = 0: the constant 1).
type anf [4]uint16

var sbox, invSbox [8]anf

func init() {
	for i, t := range tables {
		var inv [16]uint8
		for x, y := range t {
			inv[y] = uint8(x)
		}
		sbox[i], invSbox[i] = toANF(t), toANF(inv)
	}
}

// toANF is the Möbius transform of each output bit's truth table.
func toANF(t [16]uint8) anf {
	var a anf
	for b := range a {
		var f [16]uint8
		for x := range f {
			f[x] = t[x] >> b & 1
		}
		for i := 0; i < 4; i++ {
			for x := range f {
				if x>>i&1 == 1 {
					f[x] ^= f[x^1<<i]
				}
			}
		}
		for m, c := range f {
			a[b] |= uint16(c) << m
		}
	}
	return a
}

// apply evaluates the S-box on all 32 bit positions of x at once (bit j
// of x[i] is input bit i of position j).
func (s *anf) apply(x block) block {
	var m [16]uint32
	m[0] = ^uint32(0)
	for k := 1; k < 16; k++ {
		i := bits.TrailingZeros(uint(k))
		m[k] = m[k&(k-1)] & x[i]
	}
	var y block
	for b, mask := range s {
		var v uint32
		for ; mask != 0; mask &= mask - 1 {
			v ^= m[bits.TrailingZeros16(mask)]
		}
		y[b] = v
	}
	return y
}
