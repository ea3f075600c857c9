package qcow2

import (
	"math/rand/v2"
	"testing"
)

// A bit set through a bitWords after it was resized lands in the
// resized one (the chunks are shared), the bits past the shorter end
// are cleared, and bytesAt gives the on-disk bytes, bits past the end
// zero, at any offset.
func TestBitWords_ResizeAndBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	for _, sizes := range [][2]uint64{{100, 40000}, {40000, 100}, {32768, 32769}, {32769, 64}, {1, 1 << 20}, {65, 63}} {
		old := newBitWords(sizes[0])
		want := make([]bool, max(sizes[0], sizes[1]))
		for range 200 {
			i := rng.Uint64N(sizes[0])
			old.mark(i, i)
			want[i] = true
		}
		v := old.resized(sizes[1])
		for i := sizes[1]; i < sizes[0]; i++ {
			want[i] = false // dropped by a shrink
		}
		// A late mark through the old one, inside the new size.
		if late := min(sizes[0], sizes[1]) - 1; true {
			old.mark(late, late)
			want[late] = true
		}
		for i := range sizes[1] {
			if v.bit(i) != want[i] {
				t.Fatalf("%v: bit %d = %v, want %v", sizes, i, v.bit(i), want[i])
			}
		}
		for _, off := range []uint64{0, 1, 7, 8, 4095, 4096} {
			p := make([]byte, 1+rng.IntN(9000))
			for k := range p {
				p[k] = 0xee // bytesAt must clear what it does not set
			}
			v.bytesAt(p, off)
			for k := range p {
				var b byte
				for j := range uint64(8) {
					if i := (off+uint64(k))*8 + j; i < sizes[1] && want[i] {
						b |= 1 << j
					}
				}
				if p[k] != b {
					t.Fatalf("%v: byte %d at %d = %#x, want %#x", sizes, k, off, p[k], b)
				}
			}
		}
	}
}
