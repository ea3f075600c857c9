package luks

import (
	"errors"
	"testing"
)

// ParseHeaderInfo accepts the algorithms QEMU has and this package does
// not (for info), still checks the layout and the NUL-terminated names,
// and such a header never unlocks.
func TestParseHeaderInfo(t *testing.T) {
	_, area, _, err := Create([]byte("pw"), CreateOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), area[:HeaderSize]...)
	copy(b[offCipherName:offCipherName+nameLen], append([]byte("blowfish"), make([]byte, nameLen)...))
	if _, err := ParseHeader(b); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("ParseHeader: %v, want ErrUnsupported", err)
	}
	h, err := ParseHeaderInfo(b)
	if err != nil || h.CipherName != "blowfish" || h.KeyBytes != 64 || !h.Slots[0].Enabled() {
		t.Fatalf("ParseHeaderInfo: %+v, %v", h, err)
	}
	if _, err := h.Unlock(nil, []byte("pw")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Unlock: %v, want ErrUnsupported", err)
	}
	bad := append([]byte(nil), b...)
	be.PutUint32(bad[offSlots+44:], 0) // zero stripes
	if _, err := ParseHeaderInfo(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("zero stripes: %v, want ErrCorrupt", err)
	}
	bad = append([]byte(nil), b...)
	for i := range nameLen {
		bad[offCipherName+i] = 'a'
	}
	if _, err := ParseHeaderInfo(bad); err == nil {
		t.Error("a cipher name without NUL was accepted")
	}
	bad = append([]byte(nil), b...)
	be.PutUint32(bad[offKeyBytes:], 1<<20)
	if _, err := ParseHeaderInfo(bad); err == nil {
		t.Error("1 MiB key accepted")
	}
}
