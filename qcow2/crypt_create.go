package qcow2

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/qcow2/format"
)

// EncryptOptions are qemu-img create's encrypt.* options for qcow2
// (QEMU's qcow2_co_create with QCryptoBlockCreateOptionsLUKS).
type EncryptOptions struct {
	// Format is encrypt.format: "luks", or "" for no encryption. The
	// legacy "aes" is refused, as QEMU's system emulators refuse it.
	Format string
	// KeySecret is encrypt.key-secret: the id of the secret object that
	// holds the passphrase. The binaries look it up and fill Passphrase;
	// the engine uses Passphrase only (nil: none; empty but not nil:
	// the empty passphrase, as Options.Passphrase).
	KeySecret  string
	Passphrase []byte
	// CipherAlg is encrypt.cipher-alg (QEMU's names; default aes-256):
	// aes, twofish or serpent -128/192/256, or cast5-128 (des and 3des
	// are refused, as QEMU refuses them). CipherMode is
	// encrypt.cipher-mode (xts, the default, cbc, ecb or ctr).
	CipherAlg, CipherMode string
	// HashAlg is encrypt.hash-alg (default sha256); IVGenAlg is
	// encrypt.ivgen-alg (plain64, the default, plain or essiv) and
	// IVGenHashAlg encrypt.ivgen-hash-alg (essiv's hash, default
	// sha256).
	HashAlg, IVGenAlg, IVGenHashAlg string
	// IterTime is encrypt.iter-time (milliseconds on the command line;
	// default luks.DefaultIterTime).
	IterTime time.Duration
	// Iterations, if not 0, fixes the PBKDF2 iterations instead of
	// measuring them (tests).
	Iterations uint32
}

// EncryptOptionNames lists the encrypt.* create options.
var EncryptOptionNames = []string{"encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
	"encrypt.hash-alg", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.iter-time"}

func isEncryptOption(k string) bool {
	return strings.HasPrefix(k, "encrypt.") || k == "encryption"
}

// Set applies one encrypt.* option (or the legacy encryption=on, which
// QEMU maps to the AES format).
func (e *EncryptOptions) Set(k, v string) error {
	switch k {
	case "encryption":
		b, err := parseBool(k, v)
		if err != nil {
			return err
		}
		if b {
			e.Format = "aes"
		}
	case "encrypt.format":
		switch v {
		case "luks", "aes":
			e.Format = v
		default:
			return fmt.Errorf("option encrypt.format: invalid value %q (luks, aes)", v)
		}
	case "encrypt.key-secret":
		e.KeySecret = v
	case "encrypt.cipher-alg":
		if !slices.Contains(luks.QEMUCiphers, v) {
			return fmt.Errorf("option encrypt.cipher-alg: invalid value %q", v)
		}
		e.CipherAlg = v // combinations are checked by crypto/luks
	case "encrypt.cipher-mode":
		if !slices.Contains(luks.QEMUModes, v) {
			return fmt.Errorf("option encrypt.cipher-mode: invalid value %q", v)
		}
		e.CipherMode = v
	case "encrypt.hash-alg", "encrypt.ivgen-hash-alg":
		if !slices.Contains(luks.QEMUHashes, v) {
			return fmt.Errorf("option %s: invalid value %q", k, v)
		}
		if k == "encrypt.hash-alg" {
			e.HashAlg = v
		} else {
			e.IVGenHashAlg = v
		}
	case "encrypt.ivgen-alg":
		if !slices.Contains(luks.QEMUIVGens, v) {
			return fmt.Errorf("option encrypt.ivgen-alg: invalid value %q", v)
		}
		e.IVGenAlg = v
	case "encrypt.iter-time":
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 || ms > 1<<31 {
			return fmt.Errorf("option encrypt.iter-time: invalid milliseconds %q", v)
		}
		e.IterTime = time.Duration(ms) * time.Millisecond
	default:
		return fmt.Errorf("unknown qcow2 create option %q", k)
	}
	return nil
}

// normalizeEncrypt checks the encryption options against the rest.
func (o *CreateOptions) normalizeEncrypt() error {
	e := &o.Encrypt
	if e.Format == "" {
		if e.KeySecret != "" || e.Passphrase != nil || e.CipherAlg != "" || e.CipherMode != "" || e.HashAlg != "" || e.IVGenAlg != "" || e.IVGenHashAlg != "" || e.IterTime != 0 {
			return fmt.Errorf("Parameter 'encrypt.format' is missing") // QEMU's words
		}
		return nil
	}
	if e.Format == "aes" {
		// QEMU's legacy method takes the key and nothing else.
		for _, u := range []struct {
			k   string
			set bool
		}{{"encrypt.cipher-alg", e.CipherAlg != ""}, {"encrypt.cipher-mode", e.CipherMode != ""}, {"encrypt.hash-alg", e.HashAlg != ""},
			{"encrypt.ivgen-alg", e.IVGenAlg != ""}, {"encrypt.ivgen-hash-alg", e.IVGenHashAlg != ""}, {"encrypt.iter-time", e.IterTime != 0}} {
			if u.set {
				return fmt.Errorf("Parameter '%s' is unexpected", u.k)
			}
		}
	}
	switch {
	case e.Passphrase == nil:
		return fmt.Errorf("Parameter 'encrypt.key-secret' is required for cipher")
	case e.Format == "aes":
		if o.Preallocation != PreallocOff && o.Preallocation != "" {
			return fmt.Errorf("%w: preallocation=%s with encryption (preallocated clusters would not hold encrypted zeros)", ErrUnsupported, o.Preallocation)
		}
		if o.DataFileRaw {
			return errDataFileRawCrypt
		}
		return nil
	case o.Preallocation != PreallocOff && o.Preallocation != "":
		// QEMU 7.2 links preallocated clusters that hold plain zeros,
		// which read back through the cipher as garbage.
		return fmt.Errorf("%w: preallocation=%s with encryption (preallocated clusters would not hold encrypted zeros)", ErrUnsupported, o.Preallocation)
	case o.DataFileRaw:
		return errDataFileRawCrypt
	}
	// The cipher settings, refused in QEMU's words (crypto/luks's).
	_, err := e.LUKSAreaBytes()
	return err
}

// errDataFileRawCrypt refuses data_file_raw on an encrypted image: the
// data file's bytes are the disk's, every cluster linked over its zeros,
// which read back through the cipher as garbage, as with preallocation
// (QEMU 7.2 creates it).
var errDataFileRawCrypt = fmt.Errorf("%w: data_file_raw with encryption (the raw data file's clusters would not hold encrypted zeros)", ErrUnsupported)

// luksOptions maps the options to crypto/luks's.
func (e *EncryptOptions) luksOptions() luks.CreateOptions {
	return luks.CreateOptions{Cipher: e.CipherAlg, Mode: e.CipherMode, IVGen: e.IVGenAlg, IVHash: e.IVGenHashAlg,
		Hash: e.HashAlg, IterTime: e.IterTime, Iterations: e.Iterations}
}

// LUKSAreaBytes is the size of the LUKS header area an image created
// with e gets (what qemu-img measure adds for it).
func (e *EncryptOptions) LUKSAreaBytes() (uint64, error) {
	return luks.AreaBytes(e.luksOptions())
}

// addEncryption turns the new plain image on dev into a LUKS-encrypted
// one when o asks for it (QEMU's qcow2_co_create and
// qcrypto_block_luks_create): the LUKS header area goes into clusters
// allocated after the initial metadata, and only once it is durable
// does the header point at it (data before the pointer to it).
func (o *CreateOptions) addEncryption(dev block.Device) error {
	e := &o.Encrypt
	if e.Format == "" {
		return nil
	}
	if e.Format == "aes" {
		return setLegacyAES(dev)
	}
	_, area, _, err := luks.Create(e.Passphrase, e.luksOptions())
	if err != nil {
		return fmt.Errorf("qcow2: creating the LUKS header: %w", err)
	}
	im, err := OpenDevice(dev, Options{NoLock: true, NoBacking: true, NoDataFile: true, PreallocSize: -1, PreallocFill: FillUnwritten}) // metadata only (DF1)
	if err != nil {
		return err
	}
	err = im.addCryptoArea(area)
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	return err
}

// setLegacyAES marks the new plain image on dev as encrypted with QEMU's
// legacy AES method (crypt_method 1): no header area, nothing else.
func setLegacyAES(dev block.Device) error {
	im, err := OpenDevice(dev, Options{NoLock: true, NoBacking: true, NoDataFile: true, PreallocSize: -1, PreallocFill: FillUnwritten}) // metadata only
	if err != nil {
		return err
	}
	im.mu.Lock()
	im.hdr.CryptMethod = format.CryptAES
	err = im.writeHeader()
	if err == nil {
		err = im.dev.Flush()
	}
	im.mu.Unlock()
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	return err
}

// addCryptoArea allocates clusters for the LUKS header area, writes it,
// and points the header at it.
func (im *Image) addCryptoArea(area []byte) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	cs := im.g.ClusterSize
	nc := (uint64(len(area)) + cs - 1) / cs
	// With small clusters and wide refcounts the area spans many
	// refcount blocks, and one allocation call creates a bounded number
	// of them before it gives up: the blocks it made stay, so try again.
	var host format.HostOff
	var err error
	for try := 0; ; try++ {
		if host, _, err = im.allocClustersLocked(nc); err == nil {
			break
		}
		if try == 16 {
			return err
		}
	}
	buf := block.AlignedBuf(int(nc*cs), im.memAlign)
	copy(buf, area)
	if err := block.WriteAt(im.dev, buf, int64(host)); err != nil {
		return err
	}
	// The area and its refcounts are durable before the header points
	// at them (a crash in between leaks the clusters, nothing else).
	if err := im.flushLocked(); err != nil {
		return err
	}
	h := im.hdr
	h.SetCrypto(format.CryptoHeader{Offset: host, Length: uint64(len(area))})
	// QEMU writes the crypto extension first.
	if i := slices.IndexFunc(h.Extensions, func(x format.Extension) bool { return x.Type == format.ExtCrypto }); i > 0 {
		x := h.Extensions[i]
		h.Extensions = slices.Insert(slices.Delete(h.Extensions, i, i+1), 0, x)
	}
	if err := im.writeHeader(); err != nil {
		return err
	}
	return im.dev.Flush()
}
