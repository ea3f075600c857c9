package format

// The full disk encryption header pointer (QEMU's docs/interop/qcow2.txt,
// "Full disk encryption header pointer"; block/qcow2.c,
// qcow2_read_extensions, QCOW2_EXT_MAGIC_CRYPTO_HEADER): with
// crypt_method 2 (LUKS) the LUKS header lives in clusters of the image
// file, and this extension says where.

// CryptoHeaderLen is the size of the extension's data.
const CryptoHeaderLen = 16

// minLUKSHeader is the size of a LUKS1 phdr (crypto/luks.HeaderSize;
// this package imports nothing of ours): a shorter header area cannot
// hold one, and QEMU refuses to read past the extension's length.
const minLUKSHeader = 592

// CryptoHeader is the decoded extension: the LUKS header area starts at
// Offset (cluster aligned) and is Length bytes long; the clusters that
// hold it (Length rounded up to clusters) are allocated and referenced
// like metadata.
type CryptoHeader struct {
	Offset HostOff
	Length uint64
}

// Clusters is the number of clusters the header area occupies.
func (c CryptoHeader) Clusters(g *Geometry) uint64 {
	return (c.Length + g.ClusterMask) / g.ClusterSize
}

// Encode returns the extension's 16 bytes.
func (c CryptoHeader) Encode() []byte {
	b := make([]byte, CryptoHeaderLen)
	be.PutUint64(b[0:], uint64(c.Offset))
	be.PutUint64(b[8:], c.Length)
	return b
}

// ParseCryptoHeader decodes the extension's data and checks it against
// the header's cluster size: QEMU's checks (exact size, cluster-aligned
// offset) and ours (not in the header cluster, long enough for a LUKS
// header, ending below 2^63) (FM1, FM2).
func ParseCryptoHeader(data []byte, clusterBits uint32) (CryptoHeader, error) {
	if clusterBits < MinClusterBits || clusterBits > MaxClusterBits {
		// (ParseHeader checks cluster_bits first; from 64 on, the
		// cluster size below would be 0 and the modulo panic.)
		return CryptoHeader{}, unsupported("cluster_bits", uint64(clusterBits), "must be in [%d, %d]", MinClusterBits, MaxClusterBits)
	}
	if len(data) != CryptoHeaderLen {
		return CryptoHeader{}, corrupt("crypto_header", uint64(len(data)), "extension size %d, expected %d", len(data), CryptoHeaderLen)
	}
	c := CryptoHeader{Offset: HostOff(be.Uint64(data[0:])), Length: be.Uint64(data[8:])}
	cs := uint64(1) << clusterBits
	switch {
	case uint64(c.Offset)%cs != 0:
		return CryptoHeader{}, corrupt("crypto_header.offset", uint64(c.Offset), "not a multiple of the cluster size %d", cs)
	case c.Offset == 0:
		return CryptoHeader{}, corrupt("crypto_header.offset", 0, "encryption header in the qcow2 header cluster")
	case c.Length < minLUKSHeader:
		return CryptoHeader{}, corrupt("crypto_header.length", c.Length, "too short for a LUKS header")
	case uint64(c.Offset) > maxOffset:
		return CryptoHeader{}, corrupt("crypto_header.offset", uint64(c.Offset), "encryption header starts past 2^63")
	}
	// Its clusters must end below 2^63 (no overflow: both terms are
	// below 2^63 when compared).
	if rem := maxOffset - uint64(c.Offset); c.Length > rem || (c.Length+cs-1)&^(cs-1) > rem {
		return CryptoHeader{}, corrupt("crypto_header.length", c.Length, "encryption header ends past 2^63")
	}
	return c, nil
}

// checkCrypto decodes the crypto header extension into h.Crypto and
// checks that it is present exactly when crypt_method is LUKS (QEMU:
// "CRYPTO header extension only expected with LUKS encryption method").
func (h *Header) checkCrypto() error {
	seen := false
	for _, e := range h.Extensions {
		if e.Type != ExtCrypto {
			continue
		}
		if h.CryptMethod != CryptLUKS {
			return corrupt("crypto_header", uint64(h.CryptMethod), "crypto header extension only expected with LUKS encryption")
		}
		if seen {
			return corrupt("crypto_header", ExtCrypto, "more than one crypto header extension")
		}
		seen = true
		c, err := ParseCryptoHeader(e.Data, h.ClusterBits)
		if err != nil {
			return err
		}
		h.Crypto = c
	}
	if h.CryptMethod == CryptLUKS && !seen {
		return corrupt("crypto_header", CryptLUKS, "LUKS encryption without the crypto header extension")
	}
	return nil
}

// SetCrypto makes h a LUKS-encrypted image whose LUKS header area is c:
// crypt_method 2 and the crypto header extension (written by Encode
// with the other extensions).
func (h *Header) SetCrypto(c CryptoHeader) {
	h.CryptMethod = CryptLUKS
	h.Crypto = c
	h.SetExtension(ExtCrypto, c.Encode())
}
