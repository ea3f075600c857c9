package luks

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/xts"
)

// The package's XTS is x/crypto's for the plain64 IV (the tweak is the
// sector number), over whole sectors and key material's short last
// unit; plain is the same with the sector's low 32 bits.
func TestCipher_XTSMatchesXCrypto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, kb := range []uint32{32, 48, 64} {
		key := make([]byte, kb)
		for i := range key {
			key[i] = byte(r.Uint32())
		}
		ref, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, ivname := range []string{"plain64", "plain"} {
			spec, _, err := (&Header{CipherName: "aes", CipherMode: "xts-" + ivname, HashSpec: "sha256", KeyBytes: kb}).algs()
			if err != nil {
				t.Fatal(err)
			}
			c, err := newCipher(spec, key)
			if err != nil {
				t.Fatal(err)
			}
			plain := make([]byte, 4*SectorSize)
			for i := range plain {
				plain[i] = byte(r.Uint32())
			}
			first := uint64(1)<<32 + 7 // plain drops the high half
			got := append([]byte(nil), plain...)
			if err := c.EncryptSectors(got, first); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, len(plain))
			for i := 0; i < len(plain); i += SectorSize {
				n := first + uint64(i/SectorSize)
				if ivname == "plain" {
					n &= 0xffffffff
				}
				ref.Encrypt(want[i:i+SectorSize], plain[i:i+SectorSize], n)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("aes-xts-%s %d key bytes: differs from x/crypto/xts", ivname, kb)
			}
			if err := c.DecryptSectors(got, first); err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("aes-xts-%s: decrypt did not round-trip (%v)", ivname, err)
			}
			mat := append([]byte(nil), plain[:3*SectorSize+48]...)
			c.cryptMaterial(mat, true)
			ref.Encrypt(want[:SectorSize], plain[:SectorSize], 0)
			ref.Encrypt(want[3*SectorSize:3*SectorSize+48], plain[3*SectorSize:3*SectorSize+48], 3)
			if !bytes.Equal(mat[:SectorSize], want[:SectorSize]) || !bytes.Equal(mat[3*SectorSize:], want[3*SectorSize:3*SectorSize+48]) {
				t.Fatalf("aes-xts-%s: key material differs from x/crypto/xts", ivname)
			}
		}
	}
}

// CBC and CTR are the standard library's, with the IV of the sector
// (essiv: plain64 under the hash of the key; here AES-256 from sha256).
func TestCipher_CBCAndCTRMatchStdlib(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	plain := bytes.Repeat([]byte("qring sector IV "), 2*SectorSize/16)
	for _, mode := range []string{"cbc-essiv:sha256", "cbc-plain64", "ctr-plain", "ecb-plain64"} {
		spec, _, err := (&Header{CipherName: "aes", CipherMode: mode, HashSpec: "sha256", KeyBytes: 32}).algs()
		if err != nil {
			t.Fatal(err)
		}
		c, err := newCipher(spec, key)
		if err != nil {
			t.Fatal(err)
		}
		got := append([]byte(nil), plain...)
		if err := c.EncryptSectors(got, 9); err != nil {
			t.Fatal(err)
		}
		blk, _ := aes.NewCipher(key)
		want := make([]byte, len(plain))
		for i := 0; i < len(plain); i += SectorSize {
			iv := make([]byte, 16)
			iv[0] = byte(9 + i/SectorSize)
			switch mode {
			case "cbc-essiv:sha256":
				h := spec.essiv.new()
				h.Write(key)
				eb, _ := aes.NewCipher(h.Sum(nil))
				eb.Encrypt(iv, iv)
				fallthrough
			case "cbc-plain64":
				cipher.NewCBCEncrypter(blk, iv).CryptBlocks(want[i:i+SectorSize], plain[i:i+SectorSize])
			case "ctr-plain":
				cipher.NewCTR(blk, iv).XORKeyStream(want[i:i+SectorSize], plain[i:i+SectorSize])
			case "ecb-plain64":
				for j := i; j < i+SectorSize; j += 16 {
					blk.Encrypt(want[j:j+16], plain[j:j+16])
				}
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: differs from the standard library's", mode)
		}
		if err := c.DecryptSectors(got, 9); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%s: decrypt did not round-trip (%v)", mode, err)
		}
	}
}
