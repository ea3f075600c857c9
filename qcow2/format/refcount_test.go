package format

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// bitModel is an independent reference for refcount blocks: a plain bit
// array. Entries narrower than a byte are packed from the least
// significant bit of each byte (QEMU get_refcount_ro0..2); byte-wide and
// wider entries are big-endian (ro3..6).
type bitModel struct {
	buf   []byte
	order uint32
}

func (m bitModel) bit(pos uint64) uint64 { return uint64(m.buf[pos/8]>>(pos%8)) & 1 }

func (m bitModel) setBit(pos uint64, v uint64) {
	m.buf[pos/8] = m.buf[pos/8]&^(1<<(pos%8)) | byte(v&1)<<(pos%8)
}

// pos is the bit of entry i holding the value's bit k (k = 0 the least
// significant).
func (m bitModel) pos(i, k uint64) uint64 {
	w := uint64(1) << m.order
	if w < 8 {
		return i*w + k
	}
	// big-endian: byte j of the entry holds bits 8*(w/8-1-j)...
	byteInEntry := (w/8 - 1) - k/8
	return (i*w/8+byteInEntry)*8 + k%8
}

func (m bitModel) get(i uint64) uint64 {
	var v uint64
	for k := uint64(0); k < 1<<m.order; k++ {
		v |= m.bit(m.pos(i, k)) << k
	}
	return v
}

func (m bitModel) set(i, v uint64) {
	for k := uint64(0); k < 1<<m.order; k++ {
		m.setBit(m.pos(i, k), v>>k)
	}
}

func TestRefcount_Layout(t *testing.T) {
	// Hand-written layouts of QEMU's refcount blocks.
	tests := []struct {
		order uint32
		i, v  uint64
		want  []byte
	}{
		{0, 0, 1, []byte{0x01, 0}},
		{0, 7, 1, []byte{0x80, 0}},
		{0, 9, 1, []byte{0, 0x02}},
		{1, 1, 3, []byte{0x0c, 0}},
		{1, 3, 2, []byte{0x80, 0}},
		{2, 1, 0xa, []byte{0xa0, 0}},
		{2, 2, 0x5, []byte{0, 0x05}},
		{3, 1, 0xab, []byte{0, 0xab, 0, 0}},
		{4, 1, 0x1234, []byte{0, 0, 0x12, 0x34}},
		{5, 1, 0x12345678, []byte{0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78}},
		{6, 1, 0x0102030405060708, []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}},
	}
	for _, tc := range tests {
		blk := make([]byte, len(tc.want))
		SetRefcount(blk, tc.order, tc.i, tc.v)
		if !bytes.Equal(blk, tc.want) {
			t.Errorf("order %d: Set(%d, %#x) = %x, want %x", tc.order, tc.i, tc.v, blk, tc.want)
		}
		if got := GetRefcount(blk, tc.order, tc.i); got != tc.v {
			t.Errorf("order %d: Get(%d) = %#x, want %#x", tc.order, tc.i, got, tc.v)
		}
		m := bitModel{buf: make([]byte, len(tc.want)), order: tc.order}
		m.set(tc.i, tc.v)
		if !bytes.Equal(m.buf, tc.want) {
			t.Errorf("order %d: model layout %x, want %x", tc.order, m.buf, tc.want)
		}
	}
}

// TestRefcount_Model drives Get/Set on random indices and values for every
// order against the bit-array model; values are truncated to the width.
func TestRefcount_Model(t *testing.T) {
	seed := uint64(0x9e3779b97f4a7c15)
	t.Logf("seed %#x", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for order := uint32(0); order <= 6; order++ {
		t.Run(fmt.Sprintf("order=%d", order), func(t *testing.T) {
			g := NewGeometry(9, order, false)
			blk := make([]byte, g.ClusterSize)
			for j := range blk {
				blk[j] = byte(rng.Uint32())
			}
			m := bitModel{buf: append([]byte(nil), blk...), order: order}
			n := RefcountEntries(len(blk), order)
			if n != g.RefblockEntries {
				t.Fatalf("RefcountEntries = %d, want %d", n, g.RefblockEntries)
			}
			for i := uint64(0); i < n; i++ {
				if got, want := GetRefcount(blk, order, i), m.get(i); got != want {
					t.Fatalf("initial Get(%d) = %#x, want %#x", i, got, want)
				}
			}
			for step := 0; step < 5000; step++ {
				i := rng.Uint64N(n)
				v := rng.Uint64()
				switch step % 4 {
				case 0:
					v &= g.RefcountMax
				case 1:
					v = g.RefcountMax
				case 2:
					v = 0
				}
				SetRefcount(blk, order, i, v)
				m.set(i, v)
				if got := GetRefcount(blk, order, i); got != v&g.RefcountMax {
					t.Fatalf("Get(%d) after Set(%#x) = %#x", i, v, got)
				}
				if step%500 == 0 || step == 4999 {
					if !bytes.Equal(blk, m.buf) {
						t.Fatalf("step %d: block differs from model", step)
					}
				}
			}
			// The last entry is addressable, and only it changes.
			before := append([]byte(nil), blk...)
			SetRefcount(blk, order, n-1, ^GetRefcount(blk, order, n-1))
			if !bytes.Equal(before[:len(blk)-8], blk[:len(blk)-8]) {
				t.Errorf("Set of the last entry touched earlier bytes")
			}
		})
	}
	if RefcountEntries(512, 7) != 0 || RefcountEntries(0, 4) != 0 || RefcountEntries(3, 0) != 24 {
		t.Errorf("RefcountEntries edge cases")
	}
}

// FuzzRefcountBlock: for in-range indices Get/Set never panic, Set then
// Get returns the value masked to the width, and every other entry keeps
// its value.
func FuzzRefcountBlock(f *testing.F) {
	f.Add(make([]byte, 16), uint8(4), uint64(3), uint64(2))
	f.Add([]byte{0xff, 0x00, 0xa5}, uint8(0), uint64(9), uint64(0))
	f.Add([]byte{0xff, 0x00, 0xa5}, uint8(1), uint64(5), uint64(7))
	f.Add([]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}, uint8(6), uint64(0), ^uint64(0))
	f.Fuzz(func(t *testing.T, blk []byte, ord uint8, idx, v uint64) {
		order := uint32(ord) % 7
		n := RefcountEntries(len(blk), order)
		if n == 0 {
			return
		}
		i := idx % n
		max := NewGeometry(16, order, false).RefcountMax
		before := append([]byte(nil), blk...)
		SetRefcount(blk, order, i, v)
		if got := GetRefcount(blk, order, i); got != v&max {
			t.Fatalf("order %d: Set(%d, %#x) then Get = %#x", order, i, v, got)
		}
		for j := uint64(0); j < n; j++ {
			if j != i && GetRefcount(blk, order, j) != GetRefcount(before, order, j) {
				t.Fatalf("order %d: Set(%d) changed entry %d", order, i, j)
			}
		}
		m := bitModel{buf: before, order: order}
		m.set(i, v)
		if !bytes.Equal(m.buf, blk) {
			t.Fatalf("order %d: block differs from the bit model", order)
		}
	})
}

func BenchmarkGetRefcount(b *testing.B) {
	for order := uint32(0); order <= 6; order++ {
		b.Run(fmt.Sprintf("order=%d", order), func(b *testing.B) {
			blk := make([]byte, 65536)
			n := RefcountEntries(len(blk), order)
			b.ReportAllocs()
			var i, sum uint64
			for b.Loop() {
				sum += GetRefcount(blk, order, i)
				i = (i + 7919) & (n - 1)
			}
			_ = sum
		})
	}
}

func BenchmarkSetRefcount(b *testing.B) {
	for order := uint32(0); order <= 6; order++ {
		b.Run(fmt.Sprintf("order=%d", order), func(b *testing.B) {
			blk := make([]byte, 65536)
			n := RefcountEntries(len(blk), order)
			b.ReportAllocs()
			var i uint64
			for b.Loop() {
				SetRefcount(blk, order, i, i)
				i = (i + 7919) & (n - 1)
			}
		})
	}
}
