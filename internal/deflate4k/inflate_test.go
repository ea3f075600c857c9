package deflate4k

import (
	"errors"
	"fmt"
)

// A tiny, strict inflater (after the structure of RFC 1951 section 3.2)
// used only to check the invariants Compress promises: every distance is
// at most 4096, every length is 3..258, codes are complete (or a single
// one-bit code), the last block is final and no bytes follow it.

type inflater struct {
	in      []byte
	pos     int
	bitbuf  uint64
	bitcnt  uint
	out     []byte
	maxDist int
	blocks  [3]int // stored, fixed, dynamic
}

var errShort = errors.New("inflate: input truncated")

func (f *inflater) bits(n uint) (int, error) {
	for f.bitcnt < n {
		if f.pos >= len(f.in) {
			return 0, errShort
		}
		f.bitbuf |= uint64(f.in[f.pos]) << f.bitcnt
		f.pos++
		f.bitcnt += 8
	}
	v := int(f.bitbuf & (1<<n - 1))
	f.bitbuf >>= n
	f.bitcnt -= n
	return v, nil
}

type huff struct {
	count  [16]int
	symbol []int
}

func newHuff(lengths []uint8) (*huff, error) {
	h := &huff{}
	for _, l := range lengths {
		if l > 15 {
			return nil, fmt.Errorf("length %d > 15", l)
		}
		h.count[l]++
	}
	used := len(lengths) - h.count[0]
	left := 1
	for l := 1; l <= 15; l++ {
		left <<= 1
		left -= h.count[l]
		if left < 0 {
			return nil, errors.New("over-subscribed code")
		}
	}
	if left > 0 && !(used == 1 && h.count[1] == 1) {
		return nil, fmt.Errorf("incomplete code (%d symbols)", used)
	}
	var offs [16]int
	for l := 1; l < 15; l++ {
		offs[l+1] = offs[l] + h.count[l]
	}
	h.symbol = make([]int, len(lengths))
	for sym, l := range lengths {
		if l != 0 {
			h.symbol[offs[l]] = sym
			offs[l]++
		}
	}
	return h, nil
}

func (f *inflater) decode(h *huff) (int, error) {
	code, first, index := 0, 0, 0
	for l := 1; l <= 15; l++ {
		b, err := f.bits(1)
		if err != nil {
			return 0, err
		}
		code |= b
		count := h.count[l]
		if code-count < first {
			return h.symbol[index+code-first], nil
		}
		index += count
		first += count
		first <<= 1
		code <<= 1
	}
	return 0, errors.New("invalid code")
}

var (
	tLenBase  = [29]int{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	tLenExtra = [29]uint{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	tDstBase  = [30]int{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	tDstExtra = [30]uint{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

func (f *inflater) codes(lit, dist *huff) error {
	for {
		sym, err := f.decode(lit)
		if err != nil {
			return err
		}
		switch {
		case sym < 256:
			f.out = append(f.out, byte(sym))
			continue
		case sym == 256:
			return nil
		case sym > 285:
			return fmt.Errorf("bad length symbol %d", sym)
		}
		sym -= 257
		e, err := f.bits(tLenExtra[sym])
		if err != nil {
			return err
		}
		length := tLenBase[sym] + e
		if sym == 27 && e == 31 {
			return errors.New("length 258 sent as code 284")
		}
		ds, err := f.decode(dist)
		if err != nil {
			return err
		}
		if ds >= 30 {
			return fmt.Errorf("bad distance symbol %d", ds)
		}
		e, err = f.bits(tDstExtra[ds])
		if err != nil {
			return err
		}
		d := tDstBase[ds] + e
		if d > windowSize {
			return fmt.Errorf("distance %d > %d", d, windowSize)
		}
		if d > len(f.out) {
			return fmt.Errorf("distance %d before start of output (%d)", d, len(f.out))
		}
		f.maxDist = max(f.maxDist, d)
		for i := 0; i < length; i++ {
			f.out = append(f.out, f.out[len(f.out)-d])
		}
	}
}

var tFixedLit, tFixedDist *huff

func init() {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	tFixedLit, _ = newHuff(l[:])
	var d [32]uint8
	for i := range d {
		d[i] = 5
	}
	tFixedDist, _ = newHuff(d[:])
}

func (f *inflater) dynamic() error {
	nlen, err := f.bits(5)
	if err != nil {
		return err
	}
	ndist, err := f.bits(5)
	if err != nil {
		return err
	}
	ncode, err := f.bits(4)
	if err != nil {
		return err
	}
	nlen += 257
	ndist++
	ncode += 4
	if nlen > 286 || ndist > 30 {
		return fmt.Errorf("bad counts %d %d", nlen, ndist)
	}
	var cl [19]uint8
	for _, sym := range clOrder[:ncode] {
		v, err := f.bits(3)
		if err != nil {
			return err
		}
		cl[sym] = uint8(v)
	}
	for _, v := range cl {
		if v > maxCLBits {
			return errors.New("code-length code too long")
		}
	}
	clh, err := newHuff(cl[:])
	if err != nil {
		return fmt.Errorf("code-length code: %v", err)
	}
	lengths := make([]uint8, nlen+ndist)
	for i := 0; i < len(lengths); {
		sym, err := f.decode(clh)
		if err != nil {
			return err
		}
		if sym < 16 {
			lengths[i] = uint8(sym)
			i++
			continue
		}
		var v uint8
		var rep int
		switch sym {
		case 16:
			if i == 0 {
				return errors.New("repeat with no previous length")
			}
			v = lengths[i-1]
			e, err := f.bits(2)
			if err != nil {
				return err
			}
			rep = 3 + e
		case 17:
			e, err := f.bits(3)
			if err != nil {
				return err
			}
			rep = 3 + e
		default:
			e, err := f.bits(7)
			if err != nil {
				return err
			}
			rep = 11 + e
		}
		if i+rep > len(lengths) {
			return errors.New("too many lengths")
		}
		for ; rep > 0; rep-- {
			lengths[i] = v
			i++
		}
	}
	if lengths[256] == 0 {
		return errors.New("no end-of-block code")
	}
	lh, err := newHuff(lengths[:nlen])
	if err != nil {
		return fmt.Errorf("literal/length code: %v", err)
	}
	dh, err := newHuff(lengths[nlen:])
	if err != nil {
		return fmt.Errorf("distance code: %v", err)
	}
	return f.codes(lh, dh)
}

// testInflate decodes a complete raw deflate stream strictly.
func testInflate(in []byte) (*inflater, error) {
	f := &inflater{in: in}
	for {
		last, err := f.bits(1)
		if err != nil {
			return f, err
		}
		typ, err := f.bits(2)
		if err != nil {
			return f, err
		}
		switch typ {
		case 0:
			f.bitbuf, f.bitcnt = 0, 0 // drop to byte boundary
			if f.pos+4 > len(f.in) {
				return f, errShort
			}
			n := int(f.in[f.pos]) | int(f.in[f.pos+1])<<8
			nn := int(f.in[f.pos+2]) | int(f.in[f.pos+3])<<8
			if n != nn^0xffff {
				return f, errors.New("stored length mismatch")
			}
			f.pos += 4
			if f.pos+n > len(f.in) {
				return f, errShort
			}
			f.out = append(f.out, f.in[f.pos:f.pos+n]...)
			f.pos += n
		case 1:
			err = f.codes(tFixedLit, tFixedDist)
		case 2:
			err = f.dynamic()
		default:
			err = errors.New("invalid block type 3")
		}
		if err != nil {
			return f, err
		}
		f.blocks[typ]++
		if last == 1 {
			break
		}
	}
	if f.bitbuf != 0 {
		return f, errors.New("nonzero padding bits")
	}
	if f.pos != len(f.in) {
		return f, fmt.Errorf("%d bytes after final block", len(f.in)-f.pos)
	}
	return f, nil
}
