package format

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The crypto header extension of an image qemu-img made with
// encrypt.format=luks (testdata/gen.sh): the LUKS header area is in
// cluster 4 and is 2068480 bytes long (QEMU's aes-256-xts layout).
func TestParseHeader_LUKS(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "luks.qcow2hdr"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	want := CryptoHeader{Offset: 4 << 16, Length: 2068480}
	if h.CryptMethod != CryptLUKS || h.Crypto != want {
		t.Fatalf("crypt_method %d, crypto header %+v, want %+v", h.CryptMethod, h.Crypto, want)
	}
	if g := h.Geometry(); h.Crypto.Clusters(&g) != 32 {
		t.Fatalf("clusters %d", h.Crypto.Clusters(&g))
	}
	enc, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(b, enc[:len(b)]); i >= 0 {
		t.Fatalf("Encode differs from QEMU at byte %#x", i)
	}
	h2, err := ParseHeader(enc)
	if err != nil || !reflect.DeepEqual(h, h2) {
		t.Fatalf("re-parse: %v", err)
	}
}

// SetCrypto on a plain header gives what QEMU writes.
func TestHeader_SetCrypto(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "luks.qcow2hdr"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	h := *q
	h.CryptMethod, h.Crypto = CryptNone, CryptoHeader{}
	h.Extensions = nil
	for _, e := range q.Extensions {
		if e.Type != ExtCrypto {
			h.Extensions = append(h.Extensions, e)
		}
	}
	if _, err := h.Encode(); err != nil {
		t.Fatal(err)
	}
	h.SetCrypto(q.Crypto)
	// QEMU writes the crypto extension first; SetExtension appends, so
	// compare the decoded headers rather than the bytes.
	enc, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseHeader(enc)
	if err != nil {
		t.Fatal(err)
	}
	if p.CryptMethod != CryptLUKS || p.Crypto != q.Crypto {
		t.Fatalf("got %d %+v", p.CryptMethod, p.Crypto)
	}
	if !bytes.Equal(q.Crypto.Encode(), b[0x78:0x88]) {
		t.Fatalf("CryptoHeader.Encode %x, QEMU %x", q.Crypto.Encode(), b[0x78:0x88])
	}
}

func TestParseHeader_CryptoErrors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "luks.qcow2hdr"))
	if err != nil {
		t.Fatal(err)
	}
	// The extension's data is at 0x78 (after its 8-byte type/length at
	// 0x70, right after the 112-byte header).
	if be.Uint32(b[0x70:]) != ExtCrypto || be.Uint32(b[0x74:]) != CryptoHeaderLen {
		t.Fatalf("fixture layout changed: %x", b[0x70:0x78])
	}
	mut := func(f func(b []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	for _, c := range []struct {
		name, field string
		b           []byte
	}{
		{"no crypt method", "crypto_header", mut(func(b []byte) { be.PutUint32(b[32:], CryptNone) })},
		{"AES with extension", "crypto_header", mut(func(b []byte) { be.PutUint32(b[32:], CryptAES) })},
		{"missing", "crypto_header", mut(func(b []byte) { be.PutUint32(b[0x70:], 0x12345678) })},
		{"size", "crypto_header", mut(func(b []byte) { be.PutUint32(b[0x74:], 8) })},
		{"misaligned", "crypto_header.offset", mut(func(b []byte) { be.PutUint64(b[0x78:], 4<<16+512) })},
		{"header cluster", "crypto_header.offset", mut(func(b []byte) { be.PutUint64(b[0x78:], 0) })},
		{"past 2^63", "crypto_header.offset", mut(func(b []byte) { be.PutUint64(b[0x78:], 1<<63) })},
		{"short", "crypto_header.length", mut(func(b []byte) { be.PutUint64(b[0x80:], 591) })},
		{"long", "crypto_header.length", mut(func(b []byte) { be.PutUint64(b[0x80:], 1<<63-(4<<16)) })},
	} {
		_, err := ParseHeader(c.b)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want a corrupt %s", c.name, err, c.field)
		}
	}
}
