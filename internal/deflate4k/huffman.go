package deflate4k

import (
	"math/bits"
	"slices"
)

const (
	numLit  = 286 // literal/length symbols 0..285
	numDist = 30
	numCL   = 19
	eob     = 256

	maxBits   = 15 // literal/length and distance code length limit
	maxCLBits = 7  // code-length code length limit
)

// Order in which code-length code lengths are sent (RFC 1951 3.2.7).
var clOrder = [numCL]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

var (
	lenBase  [29]uint8 // length-3 at the start of each length code
	lenExtra [29]uint8
	distBase [numDist]uint16 // distance-1 at the start of each code
	distExtr [numDist]uint8

	lenCodeTab  [256]uint8        // length-3 -> length code (0..28)
	distCodeTab [windowSize]uint8 // distance-1 -> distance code

	fixedLit  tree
	fixedDist tree
)

func init() {
	lc := 0
	for code := 0; code < 28; code++ {
		e := 0
		if code >= 8 {
			e = code/4 - 1
		}
		lenBase[code], lenExtra[code] = uint8(lc), uint8(e)
		for k := 0; k < 1<<e; k++ {
			lenCodeTab[lc] = uint8(code)
			lc++
		}
	}
	lenBase[28], lenExtra[28] = 255, 0
	lenCodeTab[255] = 28

	for code := 0; code < numDist; code++ {
		if code < 4 {
			distBase[code] = uint16(code)
			continue
		}
		e := code/2 - 1
		distBase[code], distExtr[code] = uint16((2+code&1)<<e), uint8(e)
	}
	for d := 0; d < windowSize; d++ {
		c := 0
		for c+1 < numDist && int(distBase[c+1]) <= d {
			c++
		}
		distCodeTab[d] = uint8(c)
	}

	for i := 0; i < 288; i++ {
		switch {
		case i < 144:
			fixedLit.len[i] = 8
		case i < 256:
			fixedLit.len[i] = 9
		case i < 280:
			fixedLit.len[i] = 7
		default:
			fixedLit.len[i] = 8
		}
	}
	fixedLit.assignCodes(288)
	for i := 0; i < numDist; i++ {
		fixedDist.len[i] = 5
	}
	fixedDist.assignCodes(numDist)
}

// tree is one Huffman code: frequencies in, lengths and (bit-reversed,
// ready for LSB-first output) codes out. Sized for the largest alphabet.
type tree struct {
	freq [288]uint32
	len  [288]uint8
	code [288]uint16
}

// assignCodes computes canonical codes from t.len[:n] (RFC 1951 3.2.2),
// stored bit-reversed.
func (t *tree) assignCodes(n int) {
	var count [maxBits + 1]uint16
	for _, l := range t.len[:n] {
		count[l]++
	}
	count[0] = 0
	var next [maxBits + 1]uint16
	code := uint16(0)
	for b := 1; b <= maxBits; b++ {
		code = (code + count[b-1]) << 1
		next[b] = code
	}
	for i, l := range t.len[:n] {
		if l != 0 {
			t.code[i] = bits.Reverse16(next[l]) >> (16 - l)
			next[l]++
		}
	}
}

// huffBuilder is scratch space for length-limited Huffman construction.
type huffBuilder struct {
	sorted [numLit]uint64 // freq<<16 | symbol, ascending
	weight [numLit]uint64 // internal node weights
	parent [2 * numLit]uint16
	depth  [2 * numLit]uint16
}

// build sets t.len[:n] to a length-limited Huffman code for t.freq[:n].
// At least two symbols always get a code (with dummies if needed), as
// zlib does; lengths never exceed limit.
func (hb *huffBuilder) build(t *tree, n int, limit int) {
	clear(t.len[:n])
	m := 0
	for sym, f := range t.freq[:n] {
		if f != 0 {
			hb.sorted[m] = uint64(f)<<16 | uint64(sym)
			m++
		}
	}
	if m < 2 {
		s0 := 0
		if m == 1 {
			s0 = int(hb.sorted[0] & 0xffff)
		}
		s1 := 1
		if s0 == 1 {
			s1 = 0
		}
		t.len[s0], t.len[s1] = 1, 1
		t.assignCodes(n)
		return
	}
	srt := hb.sorted[:m]
	slices.Sort(srt)

	// Two-queue Huffman: leaves 0..m-1 (ascending weight), internal node k
	// is node m+k; internal weights are created in non-decreasing order.
	leaf, node, nodes := 0, 0, 0
	pick := func() int {
		if leaf < m && (node >= nodes || srt[leaf]>>16 <= hb.weight[node]) {
			leaf++
			return leaf - 1
		}
		node++
		return m + node - 1
	}
	weightOf := func(i int) uint64 {
		if i < m {
			return srt[i] >> 16
		}
		return hb.weight[i-m]
	}
	for nodes < m-1 {
		a := pick()
		b := pick()
		hb.weight[nodes] = weightOf(a) + weightOf(b)
		p := uint16(m + nodes)
		hb.parent[a], hb.parent[b] = p, p
		nodes++
	}
	root := 2*m - 2
	hb.depth[root] = 0
	for i := root - 1; i >= 0; i-- {
		hb.depth[i] = hb.depth[hb.parent[i]] + 1
	}

	// Histogram of leaf depths, clamped to limit, then repaired so that
	// the Kraft sum is exactly 1: each step removes one code from the
	// deepest level and splits a shallower leaf into two.
	var count [maxBits + 1]int
	for i := 0; i < m; i++ {
		d := int(hb.depth[i])
		if d > limit {
			d = limit
		}
		count[d]++
	}
	total := 0
	for l := 1; l <= limit; l++ {
		total += count[l] << (limit - l)
	}
	for total > 1<<limit {
		count[limit]--
		for l := limit - 1; l > 0; l-- {
			if count[l] != 0 {
				count[l]--
				count[l+1] += 2
				break
			}
		}
		total--
	}
	// Least frequent symbols get the longest codes.
	idx := 0
	for l := limit; l >= 1; l-- {
		for k := count[l]; k > 0; k-- {
			t.len[srt[idx]&0xffff] = uint8(l)
			idx++
		}
	}
	t.assignCodes(n)
}

// cost returns sum freq*len over the first n symbols.
func (t *tree) cost(n int, lens *[288]uint8) int {
	c := 0
	for i, f := range t.freq[:n] {
		c += int(f) * int(lens[i])
	}
	return c
}

// flushBlock encodes the pending tokens, covering src[s.blockStart:s.emitPos],
// as the smallest of a dynamic, fixed or stored block.
func (s *state) flushBlock(src []byte, final bool) {
	s.lit.freq[eob] = 1
	hb := &s.build
	hb.build(&s.lit, numLit, maxBits)
	hb.build(&s.dist, numDist, maxBits)

	extra := 0
	for c := 0; c < 29; c++ {
		extra += int(s.lit.freq[257+c]) * int(lenExtra[c])
	}
	for c := 0; c < numDist; c++ {
		extra += int(s.dist.freq[c]) * int(distExtr[c])
	}
	dynBits := s.lit.cost(numLit, &s.lit.len) + s.dist.cost(numDist, &s.dist.len) + extra
	fixBits := s.lit.cost(numLit, &fixedLit.len) + s.dist.cost(numDist, &fixedDist.len) + extra

	// Dynamic header.
	hlit := numLit
	for hlit > 257 && s.lit.len[hlit-1] == 0 {
		hlit--
	}
	hdist := numDist
	for hdist > 1 && s.dist.len[hdist-1] == 0 {
		hdist--
	}
	s.runLengths(hlit, hdist)
	hb.build(&s.cl, numCL, maxCLBits)
	hclen := numCL
	for hclen > 4 && s.cl.len[clOrder[hclen-1]] == 0 {
		hclen--
	}
	hdrBits := 5 + 5 + 4 + 3*hclen
	for _, r := range s.rle[:s.nrle] {
		sym := r & 31
		hdrBits += int(s.cl.len[sym]) + int(clExtra(sym))
	}

	dynTotal := 3 + hdrBits + dynBits
	fixTotal := 3 + fixBits
	nbytes := s.emitPos - s.blockStart
	chunks := max(1, (nbytes+0xffff-1)/0xffff)
	pad := (8 - (int(s.w.n)+3)&7) & 7
	storedTotal := 3 + pad + 32 + (chunks-1)*40 + 8*nbytes

	s.w.reserve(min(dynTotal, fixTotal, storedTotal)/8 + 16)
	fin := uint64(0)
	if final {
		fin = 1
	}
	switch {
	case storedTotal < min(dynTotal, fixTotal):
		data := src[s.blockStart:s.emitPos]
		for {
			k := min(len(data), 0xffff)
			f := uint64(0)
			if k == len(data) {
				f = fin
			}
			s.w.put(f, 3) // BTYPE 00
			s.w.flushAll()
			s.w.out = append(s.w.out, byte(k), byte(k>>8), ^byte(k), ^byte(k>>8))
			s.w.out = append(s.w.out, data[:k]...)
			data = data[k:]
			if len(data) == 0 {
				break
			}
		}
	case fixTotal <= dynTotal:
		s.w.put(fin|1<<1, 3)
		s.writeTokens(&fixedLit, &fixedDist)
	default:
		s.w.put(fin|2<<1, 3)
		s.w.put(uint64(hlit-257)|uint64(hdist-1)<<5|uint64(hclen-4)<<10, 14)
		for _, sym := range clOrder[:hclen] {
			s.w.put(uint64(s.cl.len[sym]), 3)
		}
		for _, r := range s.rle[:s.nrle] {
			sym := r & 31
			s.w.put(uint64(s.cl.code[sym])|uint64(r>>5)<<s.cl.len[sym], uint(s.cl.len[sym]+clExtra(sym)))
		}
		s.writeTokens(&s.lit, &s.dist)
	}

	s.lit.freq = [288]uint32{}
	s.dist.freq = [288]uint32{}
	s.ntok = 0
	s.blockStart = s.emitPos
}

func clExtra(sym uint16) uint8 {
	switch sym {
	case 16:
		return 2
	case 17:
		return 3
	case 18:
		return 7
	}
	return 0
}

// runLengths run-length encodes the literal/length code lengths [0,hlit)
// followed by the distance code lengths [0,hdist) as one sequence (RFC
// 1951 allows runs to cross the boundary) into s.rle, and counts the
// code-length symbols in s.cl.freq.
func (s *state) runLengths(hlit, hdist int) {
	lens := s.lens[:hlit+hdist]
	copy(lens, s.lit.len[:hlit])
	copy(lens[hlit:], s.dist.len[:hdist])
	s.cl.freq = [288]uint32{}
	nr := 0
	emit := func(sym, extra int) {
		s.rle[nr] = uint16(sym) | uint16(extra)<<5
		nr++
		s.cl.freq[sym]++
	}
	for i := 0; i < len(lens); {
		v := lens[i]
		j := i + 1
		for j < len(lens) && lens[j] == v {
			j++
		}
		run := j - i
		i = j
		if v == 0 {
			for run >= 11 {
				r := min(run, 138)
				if run-r > 0 && run-r < 3 && r > 11 {
					// leave at least 3 for a following code 17
					r = max(11, run-3)
				}
				emit(18, r-11)
				run -= r
			}
			if run >= 3 {
				emit(17, run-3)
				run = 0
			}
			for ; run > 0; run-- {
				emit(0, 0)
			}
			continue
		}
		emit(int(v), 0)
		run--
		for run >= 3 {
			r := min(run, 6)
			if run-r > 0 && run-r < 3 && r > 3 {
				r = max(3, run-3)
			}
			emit(16, r-3)
			run -= r
		}
		for ; run > 0; run-- {
			emit(int(v), 0)
		}
	}
	s.nrle = nr
}

// writeTokens writes the pending tokens and the end-of-block code.
func (s *state) writeTokens(lt, dt *tree) {
	w := &s.w
	for _, t := range s.tokens[:s.ntok] {
		if t < matchFlag {
			w.put(uint64(lt.code[t]), uint(lt.len[t]))
			continue
		}
		lc := (t >> 16) & 0xff
		code := lenCodeTab[lc]
		sym := 257 + int(code)
		ll := uint(lt.len[sym])
		w.put(uint64(lt.code[sym])|uint64(lc-uint32(lenBase[code]))<<ll, ll+uint(lenExtra[code]))
		d := t & 0xffff
		dc := distCodeTab[d]
		dl := uint(dt.len[dc])
		w.put(uint64(dt.code[dc])|uint64(d-uint32(distBase[dc]))<<dl, dl+uint(distExtr[dc]))
	}
	w.put(uint64(lt.code[eob]), uint(lt.len[eob]))
}

// bitWriter packs bits LSB-first. Invariant between calls: n < 32.
type bitWriter struct {
	out []byte
	acc uint64
	n   uint
}

// put appends the low nb (<= 32) bits of v.
func (w *bitWriter) put(v uint64, nb uint) {
	w.acc |= v << w.n
	w.n += nb
	if w.n >= 32 {
		w.out = append(w.out, byte(w.acc), byte(w.acc>>8), byte(w.acc>>16), byte(w.acc>>24))
		w.acc >>= 32
		w.n -= 32
	}
}

// flushAll pads to a byte boundary with zero bits and writes everything.
func (w *bitWriter) flushAll() {
	for w.n > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		if w.n < 8 {
			w.n = 0
		} else {
			w.n -= 8
		}
	}
	w.acc = 0
}

func (w *bitWriter) reserve(n int) {
	w.out = slices.Grow(w.out, n)
}
