package block

import (
	"sync"
	"unsafe"
)

// DefaultMemAlign is enough for O_DIRECT on every Linux filesystem.
const DefaultMemAlign = 4096

// AlignedBuf returns a zeroed buffer of n bytes whose address is a multiple
// of align (a power of two). The memory is ordinary Go memory, kept alive by
// the returned slice.
func AlignedBuf(n, align int) []byte {
	if align <= 1 {
		return make([]byte, n)
	}
	b := make([]byte, n+align)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	skip := int((uintptr(align) - p%uintptr(align)) % uintptr(align))
	return b[skip : skip+n : skip+n]
}

// IsAligned reports whether b's address and length are multiples of align.
func IsAligned(b []byte, align int) bool {
	if align <= 1 {
		return true
	}
	if len(b)%align != 0 {
		return false
	}
	if len(b) == 0 {
		return true
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%uintptr(align) == 0
}

// VecAligned reports whether every buffer of v is aligned to memAlign and a
// multiple of lenAlign bytes long.
func VecAligned(v [][]byte, memAlign int, lenAlign int64) bool {
	for _, b := range v {
		if !IsAligned(b, memAlign) || int64(len(b))%lenAlign != 0 {
			return false
		}
	}
	return true
}

// BufPool hands out aligned buffers of one size without allocating in
// steady state.
type BufPool struct {
	size, align int
	p           sync.Pool
}

// NewBufPool makes a pool of size-byte buffers aligned to align.
func NewBufPool(size, align int) *BufPool {
	bp := &BufPool{size: size, align: align}
	bp.p.New = func() any {
		b := AlignedBuf(size, align)
		return &b
	}
	return bp
}

// Get returns a buffer; its contents are undefined.
func (bp *BufPool) Get() *[]byte { return bp.p.Get().(*[]byte) }

// Put returns a buffer obtained from Get.
func (bp *BufPool) Put(b *[]byte) { bp.p.Put(b) }

// Size is the buffer size.
func (bp *BufPool) Size() int { return bp.size }

// zeroBuf is a shared read-only page of zeros for fallback zero writes.
var zeroBuf = AlignedBuf(1<<20, DefaultMemAlign)

// ZeroBuf returns a read-only zero buffer of at most 1 MiB. Callers must
// never write to it.
func ZeroBuf() []byte { return zeroBuf }

// WriteZeroBuffers writes n zero bytes at off through d.Writev, in chunks;
// the fallback path for WriteZeroes without Allocate (B4).
func WriteZeroBuffers(d Device, off, n int64) error {
	var v [16][]byte
	for n > 0 {
		k := 0
		var chunk int64
		for k < len(v) && n-chunk > 0 {
			c := int64(len(zeroBuf))
			if c > n-chunk {
				c = n - chunk
			}
			v[k] = zeroBuf[:c]
			chunk += c
			k++
		}
		if err := d.Writev(off, v[:k]); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}
