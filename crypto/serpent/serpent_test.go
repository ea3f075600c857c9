package serpent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// Known answers: NESSIE's vectors as Bouncy Castle's SerpentEngine tests
// carry them. They write key, plaintext and ciphertext as numbers, most
// significant byte first: each string reversed is the byte string the
// kernel, nettle and QEMU use (the zero 256-bit key gives 49 67 2b a8 ...
// there, the first vector reversed).
func TestSerpent_KnownAnswers(t *testing.T) {
	for _, v := range []struct{ key, pt, ct string }{
		{"0000000000000000000000000000000000000000000000000000000000000000", "00000000000000000000000000000000", "8910494504181950f98dd998a82b6749"},
		{"00000000000000000000000000000000", "80000000000000000000000000000000", "10b5ffb720b8cb9002a1142b0ba2e94a"},
		{"00000000000000000000000000000000", "00000000008000000000000000000000", "4f057a42d8d5bd9746e434680ddcd5e5"},
		{"00000000000000000000000000000000", "00000000000000000000400000000000", "99407bf8582ef12550886ef5b6f169b9"},
		{"000000000000000000000000000000000000000000000000", "40000000000000000000000000000000", "d522a3b8d6d89d4d2a124fdd88f36896"},
		{"000000000000000000000000000000000000000000000000", "00000000000200000000000000000000", "189b8ec3470085b3da97e82ca8964e32"},
	} {
		key, pt, want := reversed(v.key), reversed(v.pt), reversed(v.ct)
		c, err := NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, BlockSize)
		c.Encrypt(got, pt)
		if !bytes.Equal(got, want) {
			t.Errorf("key %s: encrypt gave %x, want %s", v.key, got, v.ct)
		}
		c.Decrypt(got, want)
		if !bytes.Equal(got, pt) {
			t.Errorf("key %s: decrypt gave %x, want %s", v.key, got, v.pt)
		}
	}
}

func reversed(h string) []byte {
	b, err := hex.DecodeString(h)
	if err != nil {
		panic(err)
	}
	slices.Reverse(b)
	return b
}

// Keys that are not all zeros (NESSIE's vectors above all have zero
// keys), so that the key's byte order is checked here too: answers of
// libnettle 3.8.1's serpent_encrypt (QEMU's byte order), read through
// Python's ctypes.
func TestSerpent_NettleAnswers(t *testing.T) {
	for _, v := range []struct{ key, ct string }{
		{"0102030405060708090a0b0c0d0e0f10", "d1205678283541a41b8b47a4331c27f5"},
		{"0102030405060708090a0b0c0d0e0f101112131415161718", "a0d709b7e13ea5c6efb44651138d78fa"},
		{"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20", "be99569cdb2d520ebfe2d8904191dc69"},
	} {
		key, _ := hex.DecodeString(v.key)
		pt, _ := hex.DecodeString("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
		c, err := NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, BlockSize)
		if c.Encrypt(got, pt); hex.EncodeToString(got) != v.ct {
			t.Errorf("%d-byte key: encrypt gave %x, want %s", len(key), got, v.ct)
		}
	}
}

// Decrypt undoes Encrypt for every key size, in place too.
func TestSerpent_RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{16, 24, 32} {
		for range 50 {
			key := make([]byte, n)
			pt := make([]byte, BlockSize)
			for i := range key {
				key[i] = byte(r.Uint32())
			}
			for i := range pt {
				pt[i] = byte(r.Uint32())
			}
			c, err := NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			b := append([]byte(nil), pt...)
			c.Encrypt(b, b)
			if bytes.Equal(b, pt) {
				t.Fatalf("%d-byte key: encrypt changed nothing", n)
			}
			c.Decrypt(b, b)
			if !bytes.Equal(b, pt) {
				t.Fatalf("%d-byte key: decrypt(encrypt(x)) = %x, want %x", n, b, pt)
			}
		}
	}
}

func TestSerpent_KeySizes(t *testing.T) {
	for _, n := range []int{0, 8, 15, 17, 31, 33, 64} {
		var ke KeySizeError
		if _, err := NewCipher(make([]byte, n)); !errors.As(err, &ke) || int(ke) != n {
			t.Errorf("%d-byte key: %v", n, err)
		}
	}
}

// The generated bitsliced S-boxes are the tables, and their inverses
// invert them, at every bit position.
func TestSbox_GeneratedMatchesTables(t *testing.T) {
	for i, tab := range tables {
		for pos := 0; pos < 32; pos += 7 {
			for x := range 16 {
				var in block
				for b := range 4 {
					in[b] = uint32(x>>b&1) << pos
				}
				var out, back block
				out[0], out[1], out[2], out[3] = sboxes[i](in[0], in[1], in[2], in[3])
				back[0], back[1], back[2], back[3] = invSboxes[i](out[0], out[1], out[2], out[3])
				var y int
				for b := range 4 {
					y |= int(out[b]>>pos&1) << b
				}
				if y != int(tab[x]) || back != in {
					t.Fatalf("S%d(%d) at bit %d: %d (table %d), inverse gave %v", i, x, pos, y, tab[x], back)
				}
			}
		}
	}
}

func BenchmarkSerpent(b *testing.B) {
	c, err := NewCipher(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, BlockSize)
	b.Run("encrypt", func(b *testing.B) {
		b.SetBytes(BlockSize)
		for range b.N {
			c.Encrypt(buf, buf)
		}
	})
	b.Run("decrypt", func(b *testing.B) {
		b.SetBytes(BlockSize)
		for range b.N {
			c.Decrypt(buf, buf)
		}
	})
}
