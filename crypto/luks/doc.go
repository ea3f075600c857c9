// Package luks reads and writes LUKS1 headers and encrypts 512-byte
// sectors with the master key a header protects, as QEMU's LUKS driver
// does (crypto/block-luks.c in QEMU; the LUKS1 On-Disk Format
// Specification, version 1.2.3, in cryptsetup's docs/on-disk-format.pdf).
//
// The package is pure: it works on byte slices and io.ReaderAt views of
// the header area, does no other I/O and keeps no state between calls.
// It is used two ways:
//
//   - a raw LUKS volume (qemu-img -f luks): the header area starts at
//     byte 0, the payload at PayloadOffset() and sector n of the payload
//     is encrypted with IV n (the guest offset / 512);
//   - a qcow2 image with encrypt.format=luks: the header area lives in
//     clusters the qcow2 "full disk encryption header pointer" extension
//     names (qcow2/format.CryptoHeader) and a data sector is encrypted
//     with IV = its host offset / 512, because QEMU sets
//     crypt_physical_offset for every method but the legacy AES one
//     (block/qcow2.c, qcow2_do_open; block/qcow2-threads.c,
//     qcow2_co_encdec). docs/luks.md has the engine's side.
//
// Supported: QEMU's LUKS ciphers (aes, twofish, serpent, cast5), in
// xts, cbc, ecb or ctr mode with a plain, plain64 or essiv IV, and
// QEMU's hashes (md5, sha1, sha224, sha256, sha384, sha512, ripemd160)
// for PBKDF2, the anti-forensic splitter and essiv; docs/luks.md has
// the rules. Anything else parses into an error wrapping ErrUnsupported,
// as QEMU refuses to open it (qemu-img info too).
//
// ParseHeader checks what QEMU's open checks, in QEMU's order, and its
// errors carry QEMU's message where QEMU makes the same check
// (FieldError.Qemu, QemuText), so that tools speaking as qemu-img print
// what qemu-img prints for a corrupt header.
//
// Hostile headers never panic (FuzzParseHeader): every field is checked
// before it sizes an allocation; the cipher's key sizes bound the key
// bytes to 64, a slot's material (with QEMU's 4000 stripes) to 256000
// bytes.
package luks
