// Package serpent is the Serpent block cipher (Anderson, Biham and
// Knudsen's AES candidate: 128-bit blocks, 128-, 192- or 256-bit keys, 32
// rounds), for LUKS volumes that use it (cipher_name "serpent", QEMU's
// serpent-128/192/256). Neither Go's library nor golang.org/x/crypto has
// it.
//
// Byte order: that of the Linux kernel's serpent_generic, nettle and
// libgcrypt, which dm-crypt, cryptsetup and QEMU use: a block and the
// key are read as little-endian 32-bit words, and a key shorter than 256
// bits is padded with a 1 bit and then zeros. The round function is the
// bitsliced form of the specification: S-box r mod 8 applied to bit j of
// the four words at once (word 0 the low bit of the S-box input), then
// the linear transformation. The S-boxes are straight-line code
// (sbox_gen.go) that gen_sbox.go derives from the published tables
// through their algebraic normal form, and a test checks against the
// tables, so that nothing in the package is derived by hand.
//
// Tested with NESSIE's known answers for each key size (published most
// significant byte first: reversed, they are this byte order's; all with
// zero keys), libnettle's answers for other keys, and against QEMU: qemu-io reads and writes volumes crypto/luks made with
// serpent, and qimg those qemu-img made (crypto/luks's interop tests,
// cmd/qimg's TestLUKS_CiphersLikeQemu).
package serpent
