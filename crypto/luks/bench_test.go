package luks

import "testing"

// BenchmarkSectorCipher: one MiB of sectors per operation, XTS with each
// cipher (docs/luks.md quotes these speeds).
func BenchmarkSectorCipher(b *testing.B) {
	buf := make([]byte, 1<<20)
	for _, name := range []string{"aes", "twofish", "serpent"} {
		c, err := NewSectorCipher(name, "xts-plain64", make([]byte, 64))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"-xts/encrypt", func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for range b.N {
				if err := c.EncryptSectors(buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"-xts/decrypt", func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for range b.N {
				if err := c.DecryptSectors(buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
