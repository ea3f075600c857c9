package format

import (
	"encoding/binary"
	"testing"
)

// TestParseHeader_BackingNameIsCString: QEMU reads the backing file name as a C string: bytes from the first
// NUL on are not part of it (qcow2_do_open: pstrcpy of auto_backing_file),
// and a name that starts with NUL is no backing file at all.
func TestParseHeader_BackingNameIsCString(t *testing.T) {
	b := readFixture(t, "backing.hdr")
	off := binary.BigEndian.Uint64(b[8:])
	n := binary.BigEndian.Uint32(b[16:])
	binary.BigEndian.PutUint32(b[16:], n+2) // "base.qcow2\0\0"
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.BackingFile != string(b[off:off+uint64(n)]) {
		t.Errorf("backing file %q, QEMU opens %q", h.BackingFile, b[off:off+uint64(n)])
	}
}
