package luks

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"strings"
)

// hashAlg is a hash spec this package implements.
type hashAlg struct {
	name string
	new  func() hash.Hash
	size int
}

var hashes = []hashAlg{
	{"sha1", sha1.New, sha1.Size},
	{"sha224", sha256.New224, sha256.Size224},
	{"sha256", sha256.New, sha256.Size},
	{"sha384", sha512.New384, sha512.Size384},
	{"sha512", sha512.New, sha512.Size},
}

func lookupHash(spec string) (hashAlg, error) {
	for _, h := range hashes {
		if h.name == spec {
			return h, nil
		}
	}
	return hashAlg{}, fieldErr(ErrUnsupported, "hash_spec", "hash %q not supported (sha1, sha224, sha256, sha384, sha512)", spec)
}

// ivGen is how a sector number becomes the XTS tweak.
type ivGen uint8

const (
	ivPlain64 ivGen = iota // the sector number, 64 bits little-endian
	ivPlain                // its low 32 bits
)

// cipherSpec is a decoded cipher name and mode.
type cipherSpec struct {
	iv ivGen
}

// lookupCipher parses cipher_name and cipher_mode as QEMU's
// qcrypto_block_luks_parse_header does ("<mode>-<ivgen>[:<hash>]"; a
// hash after plain or plain64 is ignored, as dm-crypt does) and accepts
// aes in xts mode with a plain or plain64 IV.
func lookupCipher(name, mode string, keyBytes uint32) (cipherSpec, error) {
	if name != "aes" {
		return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_name", "cipher %q not supported (aes)", name)
	}
	m, ivspec, ok := strings.Cut(mode, "-")
	if !ok {
		return cipherSpec{}, fieldErr(ErrCorrupt, "cipher_mode", "unexpected cipher mode string format %q", mode)
	}
	if m != "xts" {
		return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "cipher mode %q not supported (xts)", m)
	}
	ivname, _, _ := strings.Cut(ivspec, ":")
	var spec cipherSpec
	switch ivname {
	case "plain64":
		spec.iv = ivPlain64
	case "plain":
		spec.iv = ivPlain
	default:
		return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "IV generator %q not supported (plain64, plain)", ivname)
	}
	// XTS uses two AES keys of half the key bytes each.
	switch keyBytes {
	case 32, 48, 64:
	default:
		return cipherSpec{}, fieldErr(ErrUnsupported, "key_bytes", "aes-xts with %d key bytes not supported (32, 48, 64)", keyBytes)
	}
	return spec, nil
}
