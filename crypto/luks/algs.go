package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"slices"
	"strings"

	"golang.org/x/crypto/cast5"
	"golang.org/x/crypto/ripemd160" // deprecated as weak, but a LUKS1 hash QEMU takes
	"golang.org/x/crypto/twofish"

	"github.com/qring/qring/crypto/serpent"
)

// QEMU's names (qapi/crypto.json, 7.2's) of the values its LUKS create
// options take: cipher-alg, cipher-mode, ivgen-alg, and hash-alg and
// ivgen-hash-alg. Create implements all of them (and refuses des and
// 3des, as QEMU does).
var (
	QEMUCiphers = []string{"aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128", "serpent-128", "serpent-192", "serpent-256", "twofish-128", "twofish-192", "twofish-256"}
	QEMUModes   = modeNames
	QEMUIVGens  = []string{"plain", "plain64", "essiv"}
	QEMUHashes  = []string{"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160"}
)

// hashAlg is a hash spec this package implements.
type hashAlg struct {
	name string
	new  func() hash.Hash
	size int
}

// hashes are QEMU's (qapi QCryptoHashAlgorithm), all implemented.
var hashes = []hashAlg{
	{"md5", md5.New, md5.Size},
	{"sha1", sha1.New, sha1.Size},
	{"sha224", sha256.New224, sha256.Size224},
	{"sha256", sha256.New, sha256.Size},
	{"sha384", sha512.New384, sha512.Size384},
	{"sha512", sha512.New, sha512.Size},
	{"ripemd160", ripemd160.New, ripemd160.Size},
}

func lookupHash(spec string) (hashAlg, error) {
	for _, h := range hashes {
		if h.name == spec {
			return h, nil
		}
	}
	return hashAlg{}, fieldErr(ErrUnsupported, "hash_spec", "hash %q not supported (%s)", spec, names(hashes, func(h hashAlg) string { return h.name }))
}

// blockAlg is a block cipher this package implements, by its LUKS
// cipher_name.
type blockAlg struct {
	name      string
	title     string // QEMU's name in its messages ("AES")
	keyLens   []int  // the key bytes of its variants (aes-128: 16)
	blockSize int
	new       func(key []byte) (cipher.Block, error)
}

// blockAlgs are QEMU's LUKS ciphers (qcrypto_block_luks_cipher_name_map).
var blockAlgs = []blockAlg{
	{"aes", "AES", []int{16, 24, 32}, aes.BlockSize, aes.NewCipher},
	{"twofish", "Twofish", []int{16, 24, 32}, twofish.BlockSize, func(k []byte) (cipher.Block, error) { return twofish.NewCipher(k) }},
	{"cast5", "CAST5", []int{cast5.KeySize}, cast5.BlockSize, func(k []byte) (cipher.Block, error) { return cast5.NewCipher(k) }},
	{"serpent", "Serpent", []int{16, 24, 32}, serpent.BlockSize, serpent.NewCipher},
}

func lookupBlockAlg(name string) *blockAlg {
	for i := range blockAlgs {
		if blockAlgs[i].name == name {
			return &blockAlgs[i]
		}
	}
	return nil
}

// cipherMode is how a sector's blocks are chained.
type cipherMode uint8

const (
	modeXTS cipherMode = iota
	modeCBC
	modeECB
	modeCTR
)

var modeNames = []string{modeXTS: "xts", modeCBC: "cbc", modeECB: "ecb", modeCTR: "ctr"}

// ivGen is how a sector number becomes the sector's IV (for XTS, the
// tweak before its encryption), as QEMU's crypto/ivgen-*.c.
type ivGen uint8

const (
	ivPlain64 ivGen = iota // the sector number, 64 bits little-endian
	ivPlain                // its low 32 bits
	ivEssiv                // plain64 encrypted under the hash of the key
)

var ivNames = []string{ivPlain64: "plain64", ivPlain: "plain", ivEssiv: "essiv"}

// cipherSpec is a decoded cipher name and mode.
type cipherSpec struct {
	alg    *blockAlg
	mode   cipherMode
	keyLen int // one block cipher key (XTS has two of them)
	iv     ivGen
	essiv  hashAlg // ivEssiv: its digest keys the IV cipher
}

// lookupCipher parses cipher_name and cipher_mode as QEMU's
// qcrypto_block_luks_parse_header does ("<mode>-<ivgen>[:<hash>]"; a
// hash after plain or plain64 is looked up and then ignored, as
// dm-crypt does) and checks the key size against the cipher.
func lookupCipher(name, mode string, keyBytes uint32) (cipherSpec, error) {
	m, ivspec, ok := strings.Cut(mode, "-")
	if !ok {
		return cipherSpec{}, fieldErr(ErrCorrupt, "cipher_mode", "unexpected cipher mode string format %q", mode)
	}
	var spec cipherSpec
	ivname, ivhash, hasHash := strings.Cut(ivspec, ":")
	if hasHash {
		h, err := lookupHash(ivhash)
		if err != nil {
			return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "IV generator hash %q not supported", ivhash)
		}
		spec.essiv = h
	}
	mi := slices.Index(modeNames, m)
	if mi < 0 {
		return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "cipher mode %q not supported (%s)", m, strings.Join(modeNames, ", "))
	}
	spec.mode = cipherMode(mi)
	if spec.alg = lookupBlockAlg(name); spec.alg == nil {
		return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_name", "cipher %q not supported (%s)", name, names(blockAlgs, func(b blockAlg) string { return b.name }))
	}
	spec.keyLen = int(keyBytes)
	if spec.mode == modeXTS {
		if spec.alg.blockSize != 16 {
			return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "cipher mode xts needs a 16-byte block (%s has %d)", name, spec.alg.blockSize)
		}
		spec.keyLen = int(keyBytes / 2)
		if keyBytes%2 != 0 {
			spec.keyLen = 0
		}
	}
	if !slices.Contains(spec.alg.keyLens, spec.keyLen) {
		return cipherSpec{}, fieldErr(ErrUnsupported, "key_bytes", "%s-%s with %d key bytes not supported", name, m, keyBytes)
	}
	ii := slices.Index(ivNames, ivname)
	if ii < 0 {
		return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "IV generator %q not supported (%s)", ivname, strings.Join(ivNames, ", "))
	}
	spec.iv = ivGen(ii)
	if spec.iv == ivEssiv {
		if !hasHash {
			return cipherSpec{}, fieldErr(ErrCorrupt, "cipher_mode", "missing IV generator hash specification in %q", mode)
		}
		// QEMU's qcrypto_block_luks_essiv_cipher: the IV cipher is the
		// variant of the same cipher whose key is the digest's size.
		if !slices.Contains(spec.alg.keyLens, spec.essiv.size) {
			return cipherSpec{}, fieldErr(ErrUnsupported, "cipher_mode", "no %s cipher with key size %d for essiv:%s", spec.alg.title, spec.essiv.size, spec.essiv.name)
		}
	}
	return spec, nil
}

// names lists the names of xs for a message.
func names[T any](xs []T, name func(T) string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = name(x)
	}
	return strings.Join(s, ", ")
}
