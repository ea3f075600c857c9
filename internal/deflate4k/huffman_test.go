package deflate4k

import (
	"math/rand/v2"
	"testing"
)

// TestHuffmanLimits checks length-limited code construction on inputs
// whose unrestricted Huffman codes are far deeper than the limits: the
// codes must respect the limit, be complete (Kraft sum exactly 1) and give
// every used symbol a code.
func TestHuffmanLimits(t *testing.T) {
	var hb huffBuilder
	r := rand.New(rand.NewPCG(9, 9))
	for iter := 0; iter < 2000; iter++ {
		n, limit := numLit, maxBits
		if iter%2 == 1 {
			n, limit = numCL, maxCLBits
		}
		var tr tree
		switch iter % 8 {
		case 0, 1: // Fibonacci weights: maximal depth
			a, b := uint32(1), uint32(1)
			for i := 0; i < n && a < 1<<30; i++ {
				tr.freq[i] = a
				a, b = b, a+b
			}
		case 2, 3: // random sparse
			for i := 0; i < n; i++ {
				if r.IntN(4) == 0 {
					tr.freq[i] = 1 + uint32(r.IntN(1000))
				}
			}
		case 4, 5: // 0, 1 or 2 used symbols
			for k := r.IntN(3); k > 0; k-- {
				tr.freq[r.IntN(n)] = 1 + uint32(r.IntN(5))
			}
		default: // exponential spread
			for i := 0; i < n; i++ {
				tr.freq[i] = 1 + uint32(r.ExpFloat64()*float64(uint32(1)<<r.IntN(20)))
			}
		}
		hb.build(&tr, n, limit)
		kraft, used := 0, 0
		for i, l := range tr.len[:n] {
			if int(l) > limit {
				t.Fatalf("iter %d: length %d > %d", iter, l, limit)
			}
			if tr.freq[i] != 0 && l == 0 {
				t.Fatalf("iter %d: used symbol %d has no code", iter, i)
			}
			if l != 0 {
				kraft += 1 << (limit - int(l))
				used++
			}
		}
		if kraft != 1<<limit || used < 2 {
			t.Fatalf("iter %d: kraft %d/%d with %d codes", iter, kraft, 1<<limit, used)
		}
		// Canonical codes must be prefix-free: check by decoding each.
		h, err := newHuff(tr.len[:n])
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		for sym, l := range tr.len[:n] {
			if l == 0 {
				continue
			}
			f := &inflater{in: []byte{byte(tr.code[sym]), byte(tr.code[sym] >> 8)}}
			if got, err := f.decode(h); err != nil || got != sym {
				t.Fatalf("iter %d: symbol %d decodes as %d (%v)", iter, sym, got, err)
			}
		}
	}
}
