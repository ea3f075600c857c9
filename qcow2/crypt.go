package qcow2

import (
	"errors"
	"fmt"
	"io"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/qcow2/format"
)

// LUKS encryption (docs/luks.md): an image with crypt_method 2 keeps a
// LUKS1 header in clusters of its own file (format.CryptoHeader), and
// every data cluster holds aes-xts ciphertext whose IV is the sector's
// host offset / 512 (QEMU's crypt_physical_offset). Open unlocks the
// master key before anything may be written (a wrong key changes
// nothing); reads decrypt normal clusters only; writes encrypt whole
// sectors, with read-modify-write of partial ones (crypt_io.go).

var (
	// ErrNoKey: an encrypted image opened for data access without a
	// passphrase (Options.Passphrase). QEMU's message names the option.
	ErrNoKey = errors.New("qcow2: encrypted image: Parameter 'encrypt.key-secret' is required for cipher")
	// ErrWrongKey: the passphrase opens no key slot of the image's LUKS
	// header (it is luks.ErrWrongKey).
	ErrWrongKey = luks.ErrWrongKey
)

// imageCrypt is the encryption state of an open image.
type imageCrypt struct {
	area   format.CryptoHeader
	header luks.Header  // the LUKS header (for info)
	cipher *luks.Cipher // nil: opened without a key (Options.NoKey)
	// legacy is crypt_method 1 (QEMU's "aes"): no header, the key is
	// the passphrase, and a sector's IV is its guest offset / 512.
	legacy bool
	// sectors serialises a write that is not whole sectors against
	// every other guest write into its sectors: a partial sector is
	// read, decrypted, merged and written whole, and another write into
	// the same sector in between would be lost (crypt_lock.go). Zero
	// writes and discards hold their sectors shared while they change
	// entries (holdSectors), so they also wait for such a write.
	sectors sectorLocks
}

// openCrypt checks and unlocks the LUKS header of an encrypted image
// (before anything is written: a wrong key leaves the image as it was).
// Without a passphrase the open fails with ErrNoKey, unless Options.NoKey
// asks for metadata only.
func (im *Image) openCrypt(lim *fileLimit) error {
	h := im.hdr
	if f := im.opts.EncryptFormat; f != "" {
		have := map[uint32]string{format.CryptAES: "aes", format.CryptLUKS: "luks"}[h.CryptMethod]
		msg := ""
		switch {
		case have == "":
			msg = fmt.Sprintf("No encryption in image header, but options specified format '%s'", f)
		case have != f:
			msg = fmt.Sprintf("Header reported '%s' encryption format but options specify '%s'", have, f)
		}
		if msg != "" {
			// Not the image's fault: the options', in QEMU's words.
			return &FieldError{Field: "crypt_method", Value: uint64(h.CryptMethod), Msg: msg, Err: ErrUnsupported, Qemu: msg}
		}
	}
	if h.CryptMethod == format.CryptAES {
		return im.openLegacyAES()
	}
	if h.CryptMethod != format.CryptLUKS {
		return nil
	}
	area := h.Crypto
	n := area.Clusters(&im.g) * im.g.ClusterSize
	if err := lim.check("crypto_header", uint64(area.Offset), n); err != nil {
		return err
	}
	if what := im.cryptoAreaMeets(n); what != "" {
		return corruptf("crypto_header", uint64(area.Offset), "encryption header overlaps the %s", what)
	}
	if im.opts.Passphrase == nil && !im.opts.NoKey {
		return ErrNoKey
	}
	// The section keeps key material reads inside the extension's
	// length, as QEMU's qcow2_crypto_hdr_read_func; the header says how
	// much key material there is (crypto/luks caps it), so a hostile
	// length costs no memory.
	sr := io.NewSectionReader(devReaderAt{im}, int64(area.Offset), int64(area.Length))
	phdr := make([]byte, luks.HeaderSize)
	if _, err := sr.ReadAt(phdr, 0); err != nil {
		return fmt.Errorf("qcow2: reading the LUKS header: %w", err)
	}
	lh, err := luks.ParseHeader(phdr)
	if err != nil {
		return luksErr(area, err)
	}
	im.crypt = &imageCrypt{area: area, header: *lh}
	if im.opts.Passphrase == nil || im.opts.NoKey {
		return nil // NoKey: metadata only, whatever the passphrase (QEMU's BDRV_O_NO_IO)
	}
	c, err := lh.Unlock(sr, im.opts.Passphrase)
	if err != nil {
		return luksErr(area, err)
	}
	im.crypt.cipher = c
	return nil
}

// openLegacyAES opens an image of QEMU's legacy encryption (crypt_method
// 1, crypto/block-qcow.c): AES-128 in CBC mode, the key the passphrase's
// first 16 bytes (zero-padded), IV = the sector's guest offset / 512
// (QEMU sets crypt_physical_offset for every method but this one). No
// header holds a digest, so any passphrase opens the image: a wrong one
// reads garbage, as in QEMU. With an external data file the two
// numberings agree: its clusters sit at their guest offsets (DF1).
func (im *Image) openLegacyAES() error {
	if im.opts.Passphrase == nil && !im.opts.NoKey {
		return ErrNoKey
	}
	im.crypt = &imageCrypt{legacy: true}
	if im.opts.Passphrase == nil || im.opts.NoKey {
		return nil
	}
	key := make([]byte, 16)
	copy(key, im.opts.Passphrase)
	c, err := luks.NewSectorCipher("aes", "cbc-plain64", key)
	if err != nil {
		return err
	}
	im.crypt.cipher = c
	return nil
}

// ivSector is the IV of the 512-byte sector at host offset host that
// holds guest offset guest: the host sector (LUKS: QEMU's
// crypt_physical_offset), or the guest sector (legacy AES).
func (ic *imageCrypt) ivSector(host, guest uint64) uint64 {
	if ic.legacy {
		return guest / sectorSize
	}
	return host / sectorSize
}

// Encrypted reports whether the image is encrypted (LUKS, or QEMU's
// legacy AES).
func (im *Image) Encrypted() bool { return im.crypt != nil }

// LegacyAES reports whether the image uses QEMU's legacy AES encryption
// (crypt_method 1; EncryptionHeader is nil).
func (im *Image) LegacyAES() bool { return im.crypt != nil && im.crypt.legacy }

// EncryptionHeader returns a copy of the LUKS header of an encrypted
// image (qemu-img info's encrypt block), or nil.
func (im *Image) EncryptionHeader() *luks.Header {
	if im.crypt == nil || im.crypt.legacy {
		return nil
	}
	h := im.crypt.header
	return &h
}

// refuseEncrypted is the error of a feature the engine does not offer on
// encrypted images (compressed writes: QEMU writes them in the clear).
func (im *Image) refuseEncrypted(what string) error {
	if im.crypt == nil {
		return nil
	}
	return fmt.Errorf("%w: %s on an encrypted image", ErrUnsupported, what)
}

// cryptoAreaOverlap reports whether [off, off+n) overlaps the LUKS
// header area's clusters (overlap checks, Q9: a guest write there would
// destroy the key slots).
func (im *Image) cryptoAreaOverlap(off, n uint64) bool {
	if im.crypt == nil {
		return false
	}
	a := uint64(im.crypt.area.Offset)
	l := im.crypt.area.Clusters(&im.g) * im.g.ClusterSize
	return off < a+l && a < off+n
}

// checkCryptoArea counts the LUKS header area's clusters as referenced
// once (QEMU's calculate_refcounts), so Check neither reports them as
// leaked nor frees the key material.
func (c *checker) checkCryptoArea() {
	im := c.im
	if im.hdr.CryptMethod != format.CryptLUKS {
		return
	}
	a := im.hdr.Crypto
	c.inc(a.Offset, a.Clusters(&im.g)*im.g.ClusterSize, "crypto header")
}

// cryptoAreaMeets names the fixed metadata the LUKS header area's n
// bytes overlap (the header cluster, the L1 or refcount table as the
// header places them), or "".
func (im *Image) cryptoAreaMeets(n uint64) string {
	h := im.hdr
	a := uint64(h.Crypto.Offset)
	in := func(off, l uint64) bool { return l > 0 && a < off+l && off < a+n }
	switch {
	case in(0, im.g.ClusterSize):
		return "header"
	case in(uint64(h.L1TableOffset), uint64(h.L1Size)*format.TableEntrySize):
		return "active L1 table"
	case in(uint64(h.RefcountTableOffset), uint64(h.RefcountTableClusters)*im.g.ClusterSize):
		return "refcount table"
	}
	return ""
}

// devReaderAt reads the image file at any offset and length through
// aligned bounce buffers (the device may be opened with O_DIRECT); past
// the end of the file it reads zeros (block B2).
type devReaderAt struct{ im *Image }

func (r devReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, block.ErrRange
	}
	const a = 4096
	start := off &^ (a - 1)
	end := (off + int64(len(p)) + a - 1) &^ (a - 1)
	buf := block.AlignedBuf(int(end-start), r.im.memAlign)
	if err := block.ReadAt(r.im.dev, buf, start); err != nil {
		return 0, err
	}
	return copy(p, buf[off-start:]), nil
}

// luksErr types an error of the LUKS header at area as the engine's
// errors too: a damaged header is ErrCorrupt, an algorithm or version
// crypto/luks does not implement ErrUnsupported (both keep the luks
// error for errors.Is); ErrWrongKey stays as it is.
func luksErr(area format.CryptoHeader, err error) error {
	switch {
	case errors.Is(err, luks.ErrNotLUKS), errors.Is(err, luks.ErrCorrupt):
		return fmt.Errorf("qcow2: encryption header at %#x: %w: %w", uint64(area.Offset), ErrCorrupt, err)
	case errors.Is(err, luks.ErrVersion), errors.Is(err, luks.ErrUnsupported):
		return fmt.Errorf("qcow2: encryption header at %#x: %w: %w", uint64(area.Offset), ErrUnsupported, err)
	}
	return fmt.Errorf("qcow2: encryption header at %#x: %w", uint64(area.Offset), err)
}
