package format

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// ProbeLen is how much of an image a format probe reads (QEMU's
// BLOCK_PROBE_BUF_SIZE).
const ProbeLen = 512

// Probe returns the format QEMU 7.2 (bdrv_probe_all) finds for an image
// whose first bytes are head and whose file name is name: "qcow2",
// "qcow", "qed", "vmdk", "vpc", "vhdx", "vdi", "parallels", "luks",
// "bochs", "cloop", "dmg", or "raw" when none matches. head is read as
// QEMU reads it: ProbeLen bytes, zeros past a shorter head (a file
// shorter than a sector; bytes past ProbeLen are ignored). name may be
// empty (DMG is the only format probed by name, a ".dmg" suffix). An
// empty file is raw whatever its name; the caller decides that, as QEMU's
// find_image_format does before probing.
//
// Each driver's probe scores the image; the highest score wins, and a tie
// goes to the driver QEMU lists first. The content probes score 100 and
// look at distinct bytes, except VDI's, whose signature sits at offset 64:
// there Parallels and QED come before VDI, which comes before the rest
// (as qemu-img 7.2 picks). DMG and cloop score 2 (DMG first), raw 1.
func Probe(head []byte, name string) string {
	var b [ProbeLen]byte
	copy(b[:], head)
	for _, p := range probes {
		if p.match(b[:]) {
			return p.name
		}
	}
	if len(name) > 4 && strings.HasSuffix(name, ".dmg") {
		return "dmg"
	}
	if bytes.HasPrefix(b[:], []byte(cloopMagic)) {
		return "cloop"
	}
	return "raw"
}

// probes are the content probes scoring 100, in QEMU's order where two
// can match the same bytes (see Probe).
var probes = []struct {
	name  string
	match func(b []byte) bool
}{
	{"parallels", func(b []byte) bool {
		// parallels_probe: either magic, version 2.
		return (bytes.HasPrefix(b, []byte("WithoutFreeSpace")) || bytes.HasPrefix(b, []byte("WithouFreSpacExt"))) &&
			binary.LittleEndian.Uint32(b[16:]) == 2
	}},
	{"qed", func(b []byte) bool { return bytes.HasPrefix(b, []byte("QED\x00")) }},
	{"vdi", func(b []byte) bool {
		// vdi_probe: the signature after the 64-byte text, whatever the
		// version (vdi_open refuses a version other than 1.1).
		return binary.LittleEndian.Uint32(b[64:]) == 0xbeda107f
	}},
	{"qcow", func(b []byte) bool { return HasMagic(b) && binary.BigEndian.Uint32(b[4:]) == 1 }},
	{"qcow2", func(b []byte) bool { return HasMagic(b) && binary.BigEndian.Uint32(b[4:]) >= 2 }},
	{"vmdk", func(b []byte) bool {
		return bytes.HasPrefix(b, []byte("KDMV")) || bytes.HasPrefix(b, []byte("COWD")) || vmdkDescriptor(b)
	}},
	{"vpc", func(b []byte) bool { return bytes.HasPrefix(b, []byte("conectix")) }},
	{"vhdx", func(b []byte) bool { return bytes.HasPrefix(b, []byte("vhdxfile")) }},
	{"luks", func(b []byte) bool {
		// qcrypto_block_luks_has_format: the magic and version 1 (a
		// version 2 header probes as raw in QEMU 7.2).
		return bytes.HasPrefix(b, []byte("LUKS\xba\xbe")) && binary.BigEndian.Uint16(b[6:]) == 1
	}},
	{"bochs", func(b []byte) bool {
		// bochs_probe: NUL-terminated magic, type and subtype in their
		// 32-, 16- and 16-byte fields, then version 2.0 or 1.0.
		v := binary.LittleEndian.Uint32(b[64:])
		return cStringIs(b[:32], "Bochs Virtual HD Image") && cStringIs(b[32:48], "Redolog") &&
			cStringIs(b[48:64], "Growing") && (v == 0x00020000 || v == 0x00010000)
	}},
}

// cloopMagic is the shell header of a cloop image (cloop_probe).
const cloopMagic = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"

// cStringIs is strcmp(field, s) == 0 for an s shorter than field: s,
// then a NUL (a field without one differs from s at s's NUL).
func cStringIs(field []byte, s string) bool {
	return len(field) > len(s) && string(field[:len(s)]) == s && field[len(s)] == 0
}

// vmdkDescriptor is vmdk_probe's test for a text descriptor: comment
// lines and blank lines (spaces, then an optional CR), then a
// "version=1", "=2" or "=3" line.
func vmdkDescriptor(b []byte) bool {
	for len(b) > 0 {
		switch b[0] {
		case '#':
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return false
			}
			b = b[i+1:]
			continue
		case ' ':
			b = bytes.TrimLeft(b, " ")
			if len(b) > 0 && b[0] == '\r' {
				b = b[1:]
			}
			if len(b) == 0 || b[0] != '\n' {
				return false
			}
			b = b[1:]
			continue
		}
		for _, v := range []string{"version=1\n", "version=2\n", "version=3\n", "version=1\r\n", "version=2\r\n", "version=3\r\n"} {
			if bytes.HasPrefix(b, []byte(v)) {
				return true
			}
		}
		return false
	}
	return false
}
