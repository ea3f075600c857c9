package format

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// probeCases are first sectors and the format qemu-img 7.2 opened them
// as (qemu-img info on a file holding them, 2026-12): the magics, the
// versions and fields that decide, and the ties.
func probeCases() []struct {
	name string
	head []byte
	file string
	want string
} {
	le32 := func(b []byte, off int, v uint32) []byte {
		b = append(b[:len(b):len(b)], make([]byte, max(0, off+4-len(b)))...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	vdi := func(prefix string) []byte { return le32([]byte(prefix), 64, 0xbeda107f) }
	bochs := func(sub string, v uint32) []byte {
		b := make([]byte, 68)
		copy(b, "Bochs Virtual HD Image")
		copy(b[32:], "Redolog")
		copy(b[48:], sub)
		return le32(b, 64, v)
	}
	return []struct {
		name string
		head []byte
		file string
		want string
	}{
		{"zeros", make([]byte, ProbeLen), "", "raw"},
		{"empty", nil, "", "raw"},
		{"text", []byte("hello\nversion=1\n"), "", "raw"},
		{"qcow2 v3", []byte("QFI\xfb\x00\x00\x00\x03"), "", "qcow2"},
		{"qcow2 v2", []byte("QFI\xfb\x00\x00\x00\x02"), "", "qcow2"},
		{"qcow2 v9", []byte("QFI\xfb\x00\x00\x00\x09"), "", "qcow2"},
		{"qcow v1", []byte("QFI\xfb\x00\x00\x00\x01"), "", "qcow"},
		{"qcow magic v0", []byte("QFI\xfb"), "", "raw"},
		{"qed", []byte("QED\x00"), "", "qed"},
		{"vmdk4", []byte("KDMV"), "", "vmdk"},
		{"vmdk3", []byte("COWD"), "", "vmdk"},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\n  \nversion=1\nCID=fffffffe\n"), "", "vmdk"},
		{"vmdk descriptor crlf", []byte("  \r\n# c\nversion=2\r\nx"), "", "vmdk"},
		{"vmdk descriptor cut", []byte("# Disk Descr"), "", "raw"},
		{"vmdk descriptor late", []byte("#\nx\nversion=1\n"), "", "raw"},
		{"vpc", []byte("conectix"), "", "vpc"},
		{"vpc short file", []byte("conectix\x00\x00"), "", "vpc"},
		{"vhdx", []byte("vhdxfile"), "", "vhdx"},
		{"vdi 1.1", le32(vdi(""), 68, 0x00010001), "", "vdi"},
		{"vdi 1.0", le32(vdi(""), 68, 0x00010000), "", "vdi"},
		{"luks1", []byte("LUKS\xba\xbe\x00\x01"), "", "luks"},
		{"luks2", []byte("LUKS\xba\xbe\x00\x02"), "", "raw"},
		{"parallels", le32([]byte("WithoutFreeSpace"), 16, 2), "", "parallels"},
		{"parallels ext", le32([]byte("WithouFreSpacExt"), 16, 2), "", "parallels"},
		{"parallels v1", le32([]byte("WithouFreSpacExt"), 16, 1), "", "raw"},
		{"bochs v2", bochs("Growing", 0x00020000), "", "bochs"},
		{"bochs v1", bochs("Growing", 0x00010000), "", "bochs"},
		{"bochs v3", bochs("Growing", 0x00030000), "", "raw"},
		{"bochs volatile", bochs("Volatile", 0x00020000), "", "raw"},
		{"cloop", []byte(cloopMagic), "", "cloop"},
		{"dmg by name", []byte("hello"), "/x/a.dmg", "dmg"},
		{"dmg name only", []byte("hello"), ".dmg", "raw"},
		{"dmg hidden", []byte("hello"), "d/.dmg", "dmg"},
		{"dmg beats cloop", []byte(cloopMagic), "a.dmg", "dmg"},
		{"qcow2 beats dmg", []byte("QFI\xfb\x00\x00\x00\x03"), "a.dmg", "qcow2"},
		// The VDI signature at 64 under another magic: qemu-img opened
		// these as the first-listed format.
		{"vdi+parallels", le32(vdi("WithoutFreeSpace"), 16, 2), "", "parallels"},
		{"vdi+qed", vdi("QED\x00"), "", "qed"},
		{"vdi+vpc", vdi("conectix"), "", "vdi"},
		{"vdi+vhdx", vdi("vhdxfile"), "", "vdi"},
		{"vdi+luks", vdi("LUKS\xba\xbe\x00\x01"), "", "vdi"},
		{"vdi+qcow", vdi("QFI\xfb\x00\x00\x00\x01"), "", "vdi"},
		{"vdi+qcow2", vdi("QFI\xfb\x00\x00\x00\x03"), "", "vdi"},
		{"vdi+vmdk", vdi("KDMV"), "", "vdi"},
		{"vdi+vmdk descriptor", vdi("version=1\n"), "", "vdi"},
	}
}

func TestProbe_Table(t *testing.T) {
	for _, c := range probeCases() {
		if got := Probe(c.head, c.file); got != c.want {
			t.Errorf("%s: Probe(%q, %q) = %q, want %q", c.name, c.head, c.file, got, c.want)
		}
	}
}

// probeNames are the names Probe returns.
var probeNames = map[string]bool{"raw": true, "qcow2": true, "qcow": true, "qed": true, "vmdk": true, "vpc": true,
	"vhdx": true, "vdi": true, "parallels": true, "luks": true, "bochs": true, "cloop": true, "dmg": true}

// FuzzProbe: Probe never panics and names a known format; it reads only
// the first ProbeLen bytes, a short head as if zero-padded; the name
// matters only for DMG.
func FuzzProbe(f *testing.F) {
	for _, c := range probeCases() {
		f.Add(c.head, c.file)
	}
	f.Fuzz(func(t *testing.T, head []byte, name string) {
		got := Probe(head, name)
		if !probeNames[got] {
			t.Fatalf("Probe(%q, %q) = %q", head, name, got)
		}
		padded := make([]byte, ProbeLen+len(head))
		copy(padded, head)
		if p := Probe(padded[:ProbeLen], name); p != got {
			t.Fatalf("Probe(%q) = %q, padded %q", head, got, p)
		}
		if p := Probe(append(bytes.Clone(padded[:ProbeLen]), 0xff), name); p != got {
			t.Fatalf("a byte past ProbeLen changed %q to %q", got, p)
		}
		if anon := Probe(head, ""); anon != got && !(got == "dmg" && anon != "dmg") {
			t.Fatalf("name %q changed %q to %q", name, anon, got)
		}
		if anon := Probe(head, ""); anon == "dmg" {
			t.Fatal("dmg without a name")
		}
	})
}
