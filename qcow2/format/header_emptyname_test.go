package format

import "testing"

// TestParseHeader_EmptyBackingName: a backing file offset with a name
// of 0 bytes is no backing file, wherever the offset points (inside the
// header too), as QEMU opens such an image (it reads an empty name);
// qimg refused it. Encoding it again writes no backing file fields.
func TestParseHeader_EmptyBackingName(t *testing.T) {
	for _, off := range []uint64{0x1000, 0x40, 1} {
		b := readFixture(t, "backing.hdr")
		be32(16, 0)(b)
		be64(8, off)(b)
		h, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("offset %#x, size 0: %v", off, err)
		}
		if h.BackingFile != "" {
			t.Errorf("offset %#x, size 0: backing file %q", off, h.BackingFile)
		}
		enc, err := h.Encode()
		if err != nil {
			t.Fatalf("offset %#x: encode: %v", off, err)
		}
		h2, err := ParseHeader(enc)
		if err != nil || h2.BackingFileOffset != 0 || h2.BackingFileSize != 0 || h2.BackingFile != "" {
			t.Errorf("offset %#x: re-encoded: %+v, %v", off, h2, err)
		}
	}
}
