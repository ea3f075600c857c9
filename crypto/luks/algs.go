package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
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
	QEMUModes   = slices.Clone(modeNames)
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

// lookupHash finds a hash by QEMU's name for it; field names the header
// field that holds it.
func lookupHash(spec, field string) (hashAlg, error) {
	for _, h := range hashes {
		if h.name == spec {
			return h, nil
		}
	}
	return hashAlg{}, qemuErr(ErrUnsupported, field, "Hash algorithm '%s' not supported", spec)
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

// algs parses the header's cipher_name, cipher_mode, key_bytes and
// hash_spec in the order and words of QEMU's
// qcrypto_block_luks_parse_header: the mode string's shape
// ("<mode>-<ivgen>[:<hash>]"), the IV hash (looked up, and ignored after
// plain or plain64, as dm-crypt does), the mode, the cipher with its key
// size (half the key bytes in XTS mode), the hash, the IV generator,
// then essiv's cipher. A cipher and mode that cannot go together (cast5
// in XTS mode) parse, and fail in newCipher, as QEMU's fail when the
// cipher is made.
func (h *Header) algs() (cipherSpec, hashAlg, error) {
	m, ivspec, ok := strings.Cut(h.CipherMode, "-")
	if !ok {
		return cipherSpec{}, hashAlg{}, qemuErr(ErrCorrupt, "cipher_mode", "Unexpected cipher mode string format '%s'", h.CipherMode)
	}
	var spec cipherSpec
	ivname, ivhash, hasHash := strings.Cut(ivspec, ":")
	if hasHash {
		eh, err := lookupHash(ivhash, "cipher_mode")
		if err != nil {
			return cipherSpec{}, hashAlg{}, err
		}
		spec.essiv = eh
	}
	mi := slices.Index(modeNames, m)
	if mi < 0 {
		return cipherSpec{}, hashAlg{}, qemuErr(ErrUnsupported, "cipher_mode", "Cipher mode '%s' not supported", m)
	}
	spec.mode = cipherMode(mi)
	spec.keyLen = int(h.KeyBytes)
	if spec.mode == modeXTS {
		spec.keyLen = int(h.KeyBytes / 2)
	}
	if spec.alg = lookupBlockAlg(h.CipherName); spec.alg == nil || !slices.Contains(spec.alg.keyLens, spec.keyLen) {
		return cipherSpec{}, hashAlg{}, qemuErr(ErrUnsupported, "cipher_name", "Algorithm '%s' with key size %d bytes not supported", h.CipherName, spec.keyLen)
	}
	hh, err := lookupHash(h.HashSpec, "hash_spec")
	if err != nil {
		return cipherSpec{}, hashAlg{}, err
	}
	ii := slices.Index(ivNames, ivname)
	if ii < 0 {
		return cipherSpec{}, hashAlg{}, qemuErr(ErrUnsupported, "cipher_mode", "IV generator '%s' not supported", ivname)
	}
	spec.iv = ivGen(ii)
	if spec.iv == ivEssiv {
		if !hasHash {
			return cipherSpec{}, hashAlg{}, qemuErr(ErrCorrupt, "cipher_mode", "Missing IV generator hash specification")
		}
		// QEMU's qcrypto_block_luks_essiv_cipher: the IV cipher is the
		// variant of the same cipher whose key is the digest's size.
		if !slices.Contains(spec.alg.keyLens, spec.essiv.size) {
			return cipherSpec{}, hashAlg{}, qemuErr(ErrUnsupported, "cipher_mode", "%s", spec.alg.noEssiv(spec.keyLen, spec.essiv.size))
		}
	}
	return spec, hh, nil
}

// noEssiv is QEMU's refusal of an essiv hash whose digest is no key size
// of the cipher.
func (a *blockAlg) noEssiv(keyLen, digest int) string {
	if len(a.keyLens) == 1 {
		return fmt.Sprintf("Cipher %s-%d not supported with essiv", a.name, keyLen*8)
	}
	return fmt.Sprintf("No %s cipher with key size %d available", a.title, digest)
}
