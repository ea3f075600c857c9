package format

import (
	"bytes"
	"testing"
)

// TestTableCodecs: entries land big-endian at i*8 and read back.
func TestTableCodecs(t *testing.T) {
	b := make([]byte, 4*TableEntrySize)
	PutL1(b, 1, MakeL1(0x30000, true))
	PutL2(b, 2, MakeL2(0x50000, true, false))
	PutReftable(b, 3, 0x10000)
	want := []byte{
		0, 0, 0, 0, 0, 0, 0, 0,
		0x80, 0, 0, 0, 0, 3, 0, 0,
		0x80, 0, 0, 0, 0, 5, 0, 0,
		0, 0, 0, 0, 0, 1, 0, 0,
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("table bytes %x, want %x", b, want)
	}
	if L1At(b, 1) != MakeL1(0x30000, true) || L2At(b, 2) != MakeL2(0x50000, true, false) || ReftableAt(b, 3) != 0x10000 || L1At(b, 0) != 0 {
		t.Fatal("entries do not read back")
	}
	if !HasMagic([]byte("QFI\xfb\x00")) || HasMagic([]byte("QFI")) || HasMagic([]byte("QFI\xfa")) {
		t.Fatal("HasMagic")
	}
}
