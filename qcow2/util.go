package qcow2

import (
	"sync"

	"github.com/qring/qring/block"
)

func alignedCopy(b []byte, align int) []byte {
	buf := block.AlignedBuf(len(b), align)
	copy(buf, b)
	return buf
}

// sliceVec appends to dst the part [off, off+n) of the vector src.
func sliceVec(dst, src [][]byte, off, n int64) [][]byte {
	for _, b := range src {
		if n <= 0 {
			break
		}
		l := int64(len(b))
		if off >= l {
			off -= l
			continue
		}
		take := min(l-off, n)
		dst = append(dst, b[off:off+take])
		n -= take
		off = 0
	}
	return dst
}

// zeroVec clears every buffer of v.
func zeroVec(v [][]byte) {
	for _, b := range v {
		clear(b)
	}
}

// copyToVec copies src into the vector v.
func copyToVec(v [][]byte, src []byte) {
	for _, b := range v {
		n := copy(b, src)
		src = src[n:]
	}
}

// vecPool recycles buffer vectors: a vector handed to a Device escapes, so
// a stack array would cost an allocation per request on the hot path.
var vecPool = sync.Pool{New: func() any {
	v := make([][]byte, 0, 8)
	return &v
}}

func getVec() *[][]byte { return vecPool.Get().(*[][]byte) }

func putVec(v *[][]byte) {
	clear((*v)[:cap(*v)]) // do not pin the caller's buffers
	*v = (*v)[:0]
	vecPool.Put(v)
}
