package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseCryptoHeader: the crypto header extension's data, with any
// cluster_bits, decodes to an area that is cluster aligned, not in the
// header cluster, long enough for a LUKS1 phdr and whose clusters end
// at 2^63 at most, and that encodes back to the same 16 bytes; or to a
// typed error (ErrCorrupt; ErrUnsupported for a cluster_bits outside
// [MinClusterBits, MaxClusterBits]) and a zero value. Never a panic.
func FuzzParseCryptoHeader(f *testing.F) {
	// QEMU's own extension (testdata/luks.qcow2hdr: offset 0x40000,
	// 2068480 bytes, 64 KiB clusters).
	if b, err := os.ReadFile(filepath.Join("testdata", "luks.qcow2hdr")); err == nil && len(b) >= 0x88 {
		f.Add(b[0x78:0x88], uint32(16))
	}
	put := func(off, n uint64) []byte {
		b := make([]byte, CryptoHeaderLen)
		binary.BigEndian.PutUint64(b, off)
		binary.BigEndian.PutUint64(b[8:], n)
		return b
	}
	f.Add(put(512, minLUKSHeader), uint32(9))
	f.Add(put(1<<21, 1061376-4096), uint32(21))
	f.Add(put(1<<63-1<<21, 1<<21), uint32(21)) // ends at 2^63 exactly
	f.Add(put(1<<63-4096, 4097), uint32(12))   // a cluster past it
	f.Add(put(0, 4096), uint32(12))
	f.Add(put(4096, 591), uint32(12))
	f.Add(put(1<<64-4096, 1<<64-1), uint32(12))
	f.Add(put(4096, 4096)[:15], uint32(12))
	f.Add(append(put(4096, 4096), 0), uint32(12))
	f.Add(put(4096, 4096), uint32(8))
	f.Add(put(1<<22, 4096), uint32(22))
	f.Add(put(4096, 4096), uint32(64)) // 1<<64 is 0: no modulo by it
	f.Fuzz(func(t *testing.T, data []byte, clusterBits uint32) {
		c, err := ParseCryptoHeader(data, clusterBits)
		if err != nil {
			if c != (CryptoHeader{}) {
				t.Fatalf("ParseCryptoHeader(%x, %d) = %+v with error %v", data, clusterBits, c, err)
			}
			if !typedError(err) || (errors.Is(err, ErrUnsupported) != (clusterBits < MinClusterBits || clusterBits > MaxClusterBits)) {
				t.Fatalf("ParseCryptoHeader(%x, %d): untyped error %v", data, clusterBits, err)
			}
			return
		}
		cs := uint64(1) << clusterBits
		if len(data) != CryptoHeaderLen || clusterBits < MinClusterBits || clusterBits > MaxClusterBits || c.Offset == 0 || uint64(c.Offset)%cs != 0 || c.Length < minLUKSHeader {
			t.Fatalf("ParseCryptoHeader(%x, %d) accepted %+v", data, clusterBits, c)
		}
		// Its clusters, as the engine counts them, end at 2^63 at most.
		g := Geometry{ClusterSize: cs, ClusterMask: cs - 1, ClusterBits: clusterBits}
		n := c.Clusters(&g)
		if n > (maxOffset-uint64(c.Offset))/cs || uint64(c.Offset)+n*cs > maxOffset || n*cs < c.Length {
			t.Fatalf("ParseCryptoHeader(%x, %d) = %+v: %d clusters end past 2^63", data, clusterBits, c, n)
		}
		if enc := c.Encode(); !bytes.Equal(enc, data) {
			t.Fatalf("Encode(ParseCryptoHeader(%x)) = %x", data, enc)
		}
	})
}
