package memdev

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestStore_LikeFlatBytes: random writes, zeroes, resizes and snapshots
// of a store and of its snapshots read back as the same operations on
// plain byte slices do; a write to either side of a snapshot never shows
// in the other.
func TestStore_LikeFlatBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	type pair struct {
		s    *store
		flat []byte
	}
	all := []*pair{{s: newStore()}}
	check := func(p *pair) {
		t.Helper()
		if p.s.size != int64(len(p.flat)) {
			t.Fatalf("size %d, want %d", p.s.size, len(p.flat))
		}
		if got := p.s.bytes(); !bytes.Equal(got, p.flat) {
			t.Fatalf("contents differ (size %d)", len(p.flat))
		}
		if p.s.sum() != sha256.Sum256(p.flat) {
			t.Fatal("sum differs")
		}
	}
	span := func(size int) (int, int) {
		off := rng.IntN(size + 1)
		return off, rng.IntN(size - off + 1)
	}
	for i := 0; i < 4000; i++ {
		p := all[rng.IntN(len(all))]
		size := len(p.flat)
		switch op := rng.IntN(10); {
		case op < 4 && size > 0:
			off, n := span(size)
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(rng.IntN(255) + 1)
			}
			p.s.writeAt(b, int64(off))
			copy(p.flat[off:], b)
		case op < 6 && size > 0:
			off, n := span(size)
			p.s.zero(int64(off), int64(n))
			clear(p.flat[off : off+n])
		case op < 8:
			n := rng.IntN(6 * pageSize)
			p.s.resize(int64(n))
			if n < size {
				p.flat = p.flat[:n]
			} else {
				p.flat = append(p.flat, make([]byte, n-size)...)
			}
		default:
			if len(all) < 6 {
				all = append(all, &pair{s: p.s.snapshot(), flat: bytes.Clone(p.flat)})
			} else {
				all[rng.IntN(len(all))] = &pair{s: p.s.snapshot(), flat: bytes.Clone(p.flat)}
			}
		}
		for _, q := range all {
			check(q)
		}
		if off, n := span(len(p.flat)); n > 0 {
			b := make([]byte, n)
			p.s.readAt(b, int64(off))
			if !bytes.Equal(b, p.flat[off:off+n]) {
				t.Fatalf("readAt(%d, %d) differs", off, n)
			}
		}
	}
}

// TestDev_CloneAndWriteTo: a Clone reads as the device did and is not
// changed by later writes to it (nor the reverse); WriteTo writes what
// Bytes returns, past its 1 MiB buffer too.
func TestDev_CloneAndWriteTo(t *testing.T) {
	d := New(Options{})
	b := make([]byte, 3<<20+1000)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	if err := d.Writev(0, [][]byte{b}); err != nil {
		t.Fatal(err)
	}
	c := d.Clone()
	if err := d.Writev(4096, [][]byte{make([]byte, 10000)}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(0, 100, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(b)
	clear(want[:100])
	if !bytes.Equal(c.Bytes(), want) {
		t.Fatal("clone changed by a write to its source, or lost its own")
	}
	clear(b[4096 : 4096+10000])
	var out bytes.Buffer
	if n, err := d.WriteTo(&out); err != nil || n != int64(len(b)) || !bytes.Equal(out.Bytes(), b) {
		t.Fatalf("WriteTo: %d, %v, equal %v", n, err, bytes.Equal(out.Bytes(), b))
	}
}
