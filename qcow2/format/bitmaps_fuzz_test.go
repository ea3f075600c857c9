package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzParseBitmapsExt: the bitmaps header extension's data decodes to
// 1 to 65535 bitmaps and a directory of 1 to MaxBitmapDirectory bytes,
// from exactly 24 bytes (QEMU refuses any other length), which the
// engine's encoding (bitmaps_admin.go) writes back unchanged; or to a
// typed ErrCorrupt error. Never a panic. (FuzzBitmapDirectory feeds it
// too, for the directory's sake; this target checks the fields.)
func FuzzParseBitmapsExt(f *testing.F) {
	ext := func(n uint32, reserved uint32, size, off uint64) []byte {
		b := make([]byte, 24)
		binary.BigEndian.PutUint32(b, n)
		binary.BigEndian.PutUint32(b[4:], reserved)
		binary.BigEndian.PutUint64(b[8:], size)
		binary.BigEndian.PutUint64(b[16:], off)
		return b
	}
	f.Add(ext(1, 0, 32, 0x20000))
	f.Add(ext(2, 0, 64, 0x1200)) // qemu-img bitmap --add, 512-byte clusters
	f.Add(ext(65535, 0, MaxBitmapDirectory, 1<<63-512))
	f.Add(ext(65536, 0, 32, 0x20000))
	f.Add(ext(1, 1, 32, 0x20000))
	f.Add(ext(1, 0, 0, 0x20000))
	f.Add(ext(1, 0, MaxBitmapDirectory+1, 0x20000))
	f.Add(ext(1, 0, 32, 0x20001))
	f.Add(ext(1, 0, 32, 0x20000)[:23])
	f.Add(append(ext(1, 0, 32, 0x20000), 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseBitmapsExt(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !typedError(err) {
				t.Fatalf("ParseBitmapsExt(%x): error %v is not a typed ErrCorrupt", b, err)
			}
			return
		}
		if len(b) != 24 || binary.BigEndian.Uint32(b[4:]) != 0 || e.N == 0 || e.N > 65535 ||
			e.DirSize == 0 || e.DirSize > MaxBitmapDirectory {
			t.Fatalf("ParseBitmapsExt(%x) accepted %+v", b, e)
		}
		// As bitmaps_admin.go encodes the extension.
		enc := make([]byte, 24)
		binary.BigEndian.PutUint32(enc, e.N)
		binary.BigEndian.PutUint64(enc[8:], e.DirSize)
		binary.BigEndian.PutUint64(enc[16:], uint64(e.DirOffset))
		if !bytes.Equal(enc, b) {
			t.Fatalf("ParseBitmapsExt(%x) = %+v, which encodes to %x", b, e, enc)
		}
	})
}
