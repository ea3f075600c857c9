package deflate4k

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

const (
	windowSize = 4096 // largest distance emitted
	minMatch   = 3
	maxMatch   = 258

	hashBits = 15
	hashSize = 1 << hashBits
	// prev is indexed by position modulo prevSize; twice the window so
	// that no two positions of one window share a slot.
	prevSize = 2 * windowSize
	prevMask = prevSize - 1

	// zlib level 6 parameters.
	maxLazy    = 16
	goodLength = 8
	niceLength = 128
	maxChain   = 128

	// Symbols per block, as zlib with memLevel 9 (lit_bufsize-1).
	maxTokens = 1<<15 - 1

	matchFlag = 1 << 31
)

// state holds everything one Compress call needs. Positions stored in
// head and prev are "absolute": base + index into src, modulo 2^32. base
// is advanced past each input, so entries left over from earlier calls
// are out of the window; candidates are in any case verified byte by
// byte, so stale entries can only cost time, never correctness.
type state struct {
	head [hashSize]uint32
	prev [prevSize]uint32
	base uint32

	tokens [maxTokens]uint32
	ntok   int

	blockStart int // src index where the current block starts
	emitPos    int // src index just after the last token

	lit   tree // literal/length alphabet
	dist  tree
	cl    tree // code-length alphabet
	lens  [numLit + numDist]uint8
	rle   [numLit + numDist]uint16 // symbol | extra<<5
	nrle  int
	build huffBuilder

	w bitWriter
}

var pool = sync.Pool{New: func() any { return new(state) }}

// Compress appends to dst one complete raw deflate stream (final block
// bit set) encoding src and returns the extended slice. All match
// distances are at most 4096, so the stream can be inflated with a 4 KiB
// window (zlib windowBits -12). dst may be nil; src is not modified.
// Compress is safe for concurrent use.
func Compress(dst, src []byte) []byte {
	s := pool.Get().(*state)
	s.w = bitWriter{out: dst}
	s.compress(src)
	out := s.w.out
	s.w = bitWriter{}
	s.base += uint32(len(src)) + 2*prevSize
	pool.Put(s)
	return out
}

func hash3(b []byte, p int) uint32 {
	_ = b[p+2]
	v := uint32(b[p]) | uint32(b[p+1])<<8 | uint32(b[p+2])<<16
	return (v * 0x1e35a7bd) >> (32 - hashBits)
}

// insert adds position p (with p+3 <= len(src)) to the hash chains and
// returns the previous chain head.
func (s *state) insert(src []byte, p int) uint32 {
	h := hash3(src, p)
	abs := s.base + uint32(p)
	old := s.head[h]
	s.prev[abs&prevMask] = old
	s.head[h] = abs
	return old
}

// matchLen returns the length of the common prefix of a and b; len(a) >=
// len(b).
func matchLen(a, b []byte) int {
	n := len(b)
	a = a[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
		if x != 0 {
			return i + bits.TrailingZeros64(x)>>3
		}
	}
	for ; i < n; i++ {
		if a[i] != b[i] {
			break
		}
	}
	return i
}

// longest searches the chain starting at cur for a match at pos longer
// than prevLen. It returns (0, 0) if there is none.
func (s *state) longest(src []byte, pos int, cur uint32, prevLen int) (int, int) {
	maxLen := len(src) - pos
	if maxLen > maxMatch {
		maxLen = maxMatch
	}
	bestLen := prevLen
	if bestLen >= maxLen {
		return 0, 0
	}
	nice := niceLength
	if nice > maxLen {
		nice = maxLen
	}
	chain := maxChain
	if prevLen >= goodLength {
		chain >>= 2
	}
	wlim := uint32(min(pos, windowSize))
	abs := s.base + uint32(pos)
	d := abs - cur
	scan := src[pos : pos+maxLen]
	scanStart := binary.LittleEndian.Uint16(scan)
	// Two bytes ending at bestLen: a candidate must match them to be longer.
	scanEnd := binary.LittleEndian.Uint16(src[pos+bestLen-1:])
	bestPos := -1
	for {
		if d-1 >= wlim { // d == 0 or d > window or before src start
			break
		}
		m := pos - int(d)
		// m+bestLen < pos+maxLen <= len(src), so both loads are in range.
		if binary.LittleEndian.Uint16(src[m+bestLen-1:]) == scanEnd &&
			binary.LittleEndian.Uint16(src[m:]) == scanStart {
			l := matchLen(src[m:], scan)
			if l > bestLen {
				bestLen, bestPos = l, m
				if l >= nice {
					break
				}
				scanEnd = binary.LittleEndian.Uint16(src[pos+bestLen-1:])
			}
		}
		chain--
		if chain == 0 {
			break
		}
		next := s.prev[cur&prevMask]
		nd := abs - next
		if nd <= d { // chains strictly recede; anything else is stale
			break
		}
		d, cur = nd, next
	}
	if bestPos < 0 {
		return 0, 0
	}
	return bestLen, bestPos
}

func (s *state) emitLit(b byte) {
	s.tokens[s.ntok] = uint32(b)
	s.ntok++
	s.lit.freq[b]++
}

func (s *state) emitMatch(length, dist int) {
	lc := uint32(length - minMatch)
	d := uint32(dist - 1)
	s.tokens[s.ntok] = matchFlag | lc<<16 | d
	s.ntok++
	s.lit.freq[257+int(lenCodeTab[lc])]++
	s.dist.freq[distCodeTab[d]]++
}

// compress is zlib's deflate_slow over an in-memory input.
func (s *state) compress(src []byte) {
	n := len(src)
	s.ntok = 0
	s.blockStart = 0
	s.emitPos = 0
	s.lit.freq = [288]uint32{}
	s.dist.freq = [288]uint32{}

	pos := 0
	matchLength, matchStart := minMatch-1, 0
	matchAvail := false
	for pos < n {
		head := uint32(0)
		haveHead := false
		if pos+minMatch <= n {
			head = s.insert(src, pos)
			haveHead = true
		}
		prevLen, prevMatch := matchLength, matchStart
		matchLength = minMatch - 1
		if haveHead && prevLen < maxLazy {
			if l, m := s.longest(src, pos, head, prevLen); l > 0 {
				matchLength, matchStart = l, m
			}
		}
		if prevLen >= minMatch && matchLength <= prevLen {
			start := pos - 1
			end := start + prevLen
			s.emitMatch(prevLen, start-prevMatch)
			s.emitPos = end
			last := min(end, n-minMatch+1)
			for p := pos + 1; p < last; p++ {
				s.insert(src, p)
			}
			matchAvail = false
			matchLength = minMatch - 1
			pos = end
		} else if matchAvail {
			s.emitLit(src[pos-1])
			s.emitPos = pos
			pos++
		} else {
			matchAvail = true
			pos++
			continue
		}
		if s.ntok == maxTokens && s.emitPos < n {
			s.flushBlock(src, false)
		}
	}
	if matchAvail {
		s.emitLit(src[n-1])
		s.emitPos = n
	}
	s.flushBlock(src, true)
	s.w.flushAll()
}
