package qcow2

import "sync/atomic"

// The bits of a maintained dirty bitmap (Q22), set lock-free by every
// guest write. A resize cannot copy them into a longer array: a write
// that took the old array before the copy would set its bit in words no
// longer read, and the bitmap stored at Close would miss it. So the bits
// live in fixed chunks, and a resize publishes a new bitWords that holds
// the same chunks (and new ones after them): a bit set through the old
// one lands in a word the new one holds.

// bitChunkWords is the words of one chunk (32 Ki granules, 4 KiB).
const bitChunkWords = 512

type bitChunk [bitChunkWords]atomic.Uint64

// bitWords is one bitmap's bits at one disk size: bit i of word w
// covers granule 64*w+i (the on-disk order read as little-endian
// words). Its chunks are shared with the bitWords it was resized from;
// nothing else in it changes once published.
type bitWords struct {
	chunks []*bitChunk
	nbits  uint64 // the granules of the disk
}

func newBitWords(nbits uint64) *bitWords {
	v := &bitWords{nbits: nbits}
	for range (v.nwords() + bitChunkWords - 1) / bitChunkWords {
		v.chunks = append(v.chunks, new(bitChunk))
	}
	return v
}

// nwords is the words that hold the nbits bits.
func (v *bitWords) nwords() uint64 { return (v.nbits + 63) / 64 }

// word is word w (w < nwords).
func (v *bitWords) word(w uint64) *atomic.Uint64 {
	return &v.chunks[w/bitChunkWords][w%bitChunkWords]
}

// bit reports granule i's bit (i < nbits).
func (v *bitWords) bit(i uint64) bool { return v.word(i/64).Load()>>(i%64)&1 != 0 }

// mark sets the bits of granules [first, last], last < nbits.
func (v *bitWords) mark(first, last uint64) {
	for w := first / 64; w <= last/64; w++ {
		lo, hi := max(first, w*64)-w*64, min(last, w*64+63)-w*64
		mask := ^uint64(0) >> (63 - (hi - lo)) << lo
		if p := v.word(w); p.Load()&mask != mask {
			p.Or(mask)
		}
	}
}

// clearFrom clears the bits of granules i and on, up to the end of the
// chunks (bits past the disk: QEMU's in-memory bitmaps hold none).
func (v *bitWords) clearFrom(i uint64) {
	end := uint64(len(v.chunks)) * bitChunkWords
	for w := i / 64; w < end; w++ {
		p := v.word(w)
		keep := uint64(0)
		if w == i/64 {
			keep = 1<<(i%64) - 1
		}
		if p.Load()&^keep != 0 {
			p.And(keep)
		}
	}
}

// resized is v for a disk of nbits granules: the same chunks, and new
// empty ones past them. The bits past the end of the shorter of the two
// are cleared first, as QEMU's hbitmap_truncate leaves them: a growth
// shows its new range clean, and a shrink drops what lay past its end.
// A bit set through v meanwhile lands in a shared word (a write still in
// flight from before: at worst a bit set past the end, never one lost).
func (v *bitWords) resized(nbits uint64) *bitWords {
	v.clearFrom(min(nbits, v.nbits))
	n := &bitWords{nbits: nbits}
	need := (n.nwords() + bitChunkWords - 1) / bitChunkWords
	n.chunks = append([]*bitChunk(nil), v.chunks[:min(uint64(len(v.chunks)), need)]...)
	for uint64(len(n.chunks)) < need {
		n.chunks = append(n.chunks, new(bitChunk))
	}
	return n
}

// bytesAt copies the on-disk bytes [off, off+len(p)) of the bitmap into
// p: little-endian words, the bits past nbits zero.
func (v *bitWords) bytesAt(p []byte, off uint64) {
	clear(p)
	nbytes := (v.nbits + 7) / 8
	end := min(off+uint64(len(p)), nbytes)
	var x uint64
	for b := off; b < end; b++ {
		if b == off || b%8 == 0 {
			x = v.word(b / 8).Load()
		}
		p[b-off] = byte(x >> (8 * (b % 8)))
	}
	if last := nbytes - 1; v.nbits%8 != 0 && last >= off && last < end {
		p[last-off] &= byte(1)<<(v.nbits%8) - 1
	}
}
