package format

import (
	"bytes"
	"testing"
)

// ParseHeader's QEMU messages, in QEMU's order (FM7): each case changes
// fields of a v3 header qemu-img wrote (cluster_bits 16, header_length
// 112); where two faults are set, the one QEMU 7.2 names comes first.
// cmd/qimg's TestHeaderErrors_LikeQemu checks the same against qemu-img.
func TestParseHeader_QemuMessages(t *testing.T) {
	base := readFixture(t, "v3.hdr")
	for _, tc := range []struct {
		name string
		mut  []func([]byte)
		cut  int
		want string
	}{
		{"magic", []func([]byte){be32(0, 1)}, 0, "Image is not in qcow2 format"},
		{"version", []func([]byte){be32(4, 4)}, 0, "Unsupported qcow2 version 4"},
		{"cluster bits", []func([]byte){be32(20, 8)}, 0, "Unsupported cluster size: 2^8"},
		{"cut inside the header", nil, 60, "qcow2 header too short"},
		{"cut after the version", nil, 8, "Unsupported cluster size: 2^0"},
		{"header past the cluster", []func([]byte){be32(20, 9), be32(100, 1024)}, 0, "qcow2 header exceeds cluster size"},
		{"compression before features", []func([]byte){func(b []byte) { b[104] = 5 }, be64(72, 1<<9)}, 0, "qcow2: unknown compression type: 5"},
		{"features", []func([]byte){be64(72, 1<<5|1<<7)}, 0, "Unsupported qcow2 feature(s): Unknown incompatible feature: a0"},
		{"subclusters before refcount width", []func([]byte){be32(20, 12), be64(72, IncompatExtendedL2), be32(96, 7)}, 0, "Unsupported subcluster size: 128"},
		{"refcount table before L1", []func([]byte){be64(48, 0x10001), be64(40, 0x30001)}, 0, "Reference count table offset invalid"},
		{"L1 offset before its size", []func([]byte){be64(24, 1<<40), be64(40, 0x30001)}, 0, "Active L1 table offset invalid"},
		{"image too big", []func([]byte){be64(24, 1<<62)}, 0, "Image is too big"},
		{"L1 before encryption", []func([]byte){be32(32, 3), be32(36, 0x10000000)}, 0, "Active L1 table too large"},
		{"encryption", []func([]byte){be32(32, 3)}, 0, "Unsupported encryption method 3"},
	} {
		b := bytes.Clone(base)
		for _, m := range tc.mut {
			m(b)
		}
		if tc.cut > 0 {
			b = b[:tc.cut]
		}
		_, err := ParseHeader(b)
		if err == nil {
			t.Errorf("%s: parsed", tc.name)
			continue
		}
		if got := QemuText(err); got != tc.want {
			t.Errorf("%s: %q, want QEMU's %q (%v)", tc.name, got, tc.want, err)
		}
	}
}
