package format

// RefcountEntries is the number of 2^order-bit entries a refcount block
// of n bytes holds; valid indices for GetRefcount/SetRefcount are below
// it.
func RefcountEntries(n int, order uint32) uint64 {
	if order > 6 {
		return 0
	}
	return uint64(n) * 8 >> order
}

// GetRefcount reads entry i of a refcount block with 2^order-bit entries.
// Sub-byte entries are packed with entry 0 in the least significant bits;
// wider ones are big-endian.
func GetRefcount(blk []byte, order uint32, i uint64) uint64 {
	switch order {
	case 0, 1, 2:
		bitsPer := uint64(1) << order
		per := 8 / bitsPer
		shift := (i % per) * bitsPer
		return uint64(blk[i/per]>>shift) & (1<<bitsPer - 1)
	case 3:
		return uint64(blk[i])
	case 4:
		return uint64(be.Uint16(blk[i*2:]))
	case 5:
		return uint64(be.Uint32(blk[i*4:]))
	default:
		return be.Uint64(blk[i*8:])
	}
}

// SetRefcount writes entry i; v is truncated to 2^order bits (callers
// check against Geometry.RefcountMax first).
func SetRefcount(blk []byte, order uint32, i, v uint64) {
	switch order {
	case 0, 1, 2:
		bitsPer := uint64(1) << order
		per := 8 / bitsPer
		shift := (i % per) * bitsPer
		mask := byte((1<<bitsPer - 1) << shift)
		blk[i/per] = blk[i/per]&^mask | byte(v<<shift)&mask
	case 3:
		blk[i] = byte(v)
	case 4:
		be.PutUint16(blk[i*2:], uint16(v))
	case 5:
		be.PutUint32(blk[i*4:], uint32(v))
	default:
		be.PutUint64(blk[i*8:], v)
	}
}
