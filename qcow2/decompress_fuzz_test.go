package qcow2

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/qring/qring/qcow2/format"
)

// FuzzDecompressCluster: any stored bytes of a compressed cluster (as
// much as a descriptor covers: two clusters at most) inflate, with
// zlib or zstd, into exactly one cluster or fail with ErrCorrupt (an
// unknown compression type with ErrUnsupported); never a panic, and
// never more memory than a few clusters' worth (a hostile zstd frame
// header must not make a read allocate its declared window). And
// what compressCluster compresses inflates back to itself, also with
// the rest of the last sector after it, as QEMU's descriptors cover.
//
// The input is the compression type, the cluster size (512 << (csel %
// 13)) and the bytes.
func FuzzDecompressCluster(f *testing.F) {
	plain := bytes.Repeat([]byte("qring compressed cluster "), 200)
	for _, ct := range []uint8{format.CompressionZlib, format.CompressionZstd} {
		for _, cs := range []int{512, 4096, 65536} {
			data := make([]byte, cs)
			copy(data, plain)
			c, err := compressCluster(ct, data, cs)
			if err != nil || c == nil {
				f.Fatalf("compressCluster(%d, %d): %v", ct, cs, err)
			}
			f.Add(ct, uint8(cs/512-1)%13, c)
			f.Add(ct, uint8(cs/512-1)%13, append(append([]byte(nil), c...), 0xff, 0, 0x28, 0xb5))
			f.Add(ct, uint8(cs/512-1)%13, c[:len(c)/2])
		}
	}
	// zstd frames that declare a 512 MiB window (Window_Descriptor
	// 0x98: 2^(10+19) bytes, the decoder's default limit), an 8 GiB one
	// (0xb8) and a 1 KiB one (0x00), each with one RLE block that fills
	// a 4 KiB cluster from one byte ((4096<<3)|2|1: 03 80 00); then the
	// 512 MiB window with a 512-byte RLE block, and with a raw block of
	// 8 bytes (too short for the cluster).
	for _, wd := range []byte{0x98, 0xb8, 0x00} {
		f.Add(uint8(format.CompressionZstd), uint8(3), []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, wd, 0x03, 0x80, 0x00, 0xab})
	}
	f.Add(uint8(format.CompressionZstd), uint8(0), []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x98, 0x03, 0x10, 0x00, 0xab})
	f.Add(uint8(format.CompressionZstd), uint8(0), []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x98, 0x41, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8})
	// A stored deflate block of 5 bytes; an empty one; a bad block type.
	f.Add(uint8(format.CompressionZlib), uint8(0), []byte{0x01, 0x05, 0x00, 0xfa, 0xff, 'h', 'e', 'l', 'l', 'o'})
	f.Add(uint8(format.CompressionZlib), uint8(0), []byte{0x03, 0x00})
	f.Add(uint8(format.CompressionZlib), uint8(0), []byte{0x07})
	f.Add(uint8(2), uint8(0), []byte{0})
	f.Fuzz(func(t *testing.T, ctype uint8, csel uint8, src []byte) {
		cs := 512 << (csel % 13)
		if len(src) > 2*cs {
			t.Skip()
		}
		buf := make([]byte, cs)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		err := decompressCluster(ctype, src, buf, 0)
		runtime.ReadMemStats(&ms)
		// The decoders' own state (zstd's tables, flate's window) and
		// the ring a frame of a cluster's window needs.
		if got, limit := ms.TotalAlloc-before, uint64(8*cs+4<<20); got > limit {
			t.Errorf("decompressing %d bytes into a cluster of %d allocated %d bytes (limit %d)", len(src), cs, got, limit)
		}
		switch {
		case err == nil:
		case ctype != format.CompressionZlib && ctype != format.CompressionZstd:
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("compression type %d: %v", ctype, err)
			}
			return
		case !errors.Is(err, ErrCorrupt):
			t.Fatalf("decompressCluster(%d, %x): untyped error %v", ctype, src, err)
		}
		if ctype != format.CompressionZlib && ctype != format.CompressionZstd {
			t.Fatalf("compression type %d accepted", ctype)
		}
		// Round trip: the input as a cluster's data.
		data := make([]byte, cs)
		copy(data, src)
		c, err := compressCluster(ctype, data, cs)
		if err != nil {
			t.Fatalf("compressCluster: %v", err)
		}
		if c == nil {
			return // stored plain
		}
		tail := (len(c) + 511) &^ 511
		stored := append(append([]byte(nil), c...), make([]byte, tail-len(c))...)
		copy(stored[len(c):], src) // the sector's rest: any bytes
		got := make([]byte, cs)
		for _, s := range [][]byte{c, stored} {
			clear(got)
			if err := decompressCluster(ctype, s, got, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round trip of %d bytes (type %d, cluster %d, stored %d of %d): %v", len(src), ctype, cs, len(s), len(c), err)
			}
		}
	})
}
