package luks

import (
	"encoding/binary"
	"io"
)

// diffuse is the anti-forensic splitter's hash step (the LUKS1
// specification's H1; QEMU's qcrypto_afsplit_hash): block is cut into
// digest-sized pieces, piece i (the last one possibly shorter) becomes
// H(be32(i) || piece) truncated to the piece's length.
func diffuse(h hashAlg, block []byte) {
	var iv [4]byte
	f := h.new()
	sum := make([]byte, 0, h.size)
	for i := 0; i*h.size < len(block); i++ {
		p := block[i*h.size : min((i+1)*h.size, len(block))]
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		f.Reset()
		f.Write(iv[:])
		f.Write(p)
		copy(p, f.Sum(sum[:0]))
	}
}

func xorInto(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}

// afMerge recovers the key of len(split)/stripes bytes from its split
// form.
func afMerge(h hashAlg, split []byte, stripes int) []byte {
	n := len(split) / stripes
	d := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(d, split[i*n:(i+1)*n])
		diffuse(h, d)
	}
	xorInto(d, split[(stripes-1)*n:stripes*n])
	return d
}

// afSplit spreads key over stripes blocks: stripes-1 random blocks, and
// a last one that makes afMerge give key back.
func afSplit(h hashAlg, key []byte, stripes int, rand io.Reader) ([]byte, error) {
	n := len(key)
	split := make([]byte, n*stripes)
	if _, err := io.ReadFull(rand, split[:n*(stripes-1)]); err != nil {
		return nil, err
	}
	d := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(d, split[i*n:(i+1)*n])
		diffuse(h, d)
	}
	last := split[(stripes-1)*n:]
	copy(last, key)
	xorInto(last, d)
	return split, nil
}
