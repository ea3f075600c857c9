package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// xwriteWithCOWCrypt is xwriteWithCOW (xl2write.go) for encrypted
// images: the bytes [x.from, x.to) of the host cluster (the guest data
// and the COW range around it) are written as ciphertext under their own
// host sectors. The old contents come from xreadOldCrypt (decrypted
// where they were encrypted data); zeros are encrypted like any data, so
// none of the zero shortcuts apply (crypt_io.go). Bytes of the cluster
// outside [x.from, x.to) belong to subclusters that stay unallocated or
// zero: nothing reads them. The guest data is whole sectors (writevCrypt)
// and subclusters are at least 512 bytes, so every range is whole
// sectors.
func (im *Image) xwriteWithCOWCrypt(p *allocation, x *xl2Alloc, v [][]byte, n int64) (bool, error) {
	c := im.crypt.cipher
	if c == nil {
		return false, ErrNoKey
	}
	g := &im.g
	host := p.st.host
	in, cstart, headLen, tailLen := x.span(g, p.goff, n)
	if headLen == 0 && tailLen == 0 {
		return false, im.writeEncrypted(g.HostFor(host, p.goff), p.goff, v)
	}
	bp := im.clusterBuf()
	defer im.putClusterBuf(bp)
	buf := *bp
	if err := im.xreadOldCrypt(buf, p.old, x.bitmap, cstart, x.from, in); err != nil {
		return false, err
	}
	if err := im.xreadOldCrypt(buf, p.old, x.bitmap, cstart, in+uint64(n), x.to); err != nil {
		return false, err
	}
	vp := getVec()
	*vp = sliceVec((*vp)[:0], v, 0, n)
	copyFromVec(buf[in:in+uint64(n)], *vp)
	putVec(vp)
	b := buf[x.from:x.to]
	at := uint64(host) + x.from
	if err := c.EncryptSectors(b, im.crypt.ivSector(at, uint64(cstart)+x.from)); err != nil {
		return false, err
	}
	im.c.cowBytes.Add(int64(headLen + tailLen))
	return true, block.WriteAt(im.dev, b, int64(at))
}

// xreadOldCrypt is xreadOld for encrypted images: allocated subclusters
// of the old cluster decrypt with the old host sectors.
func (im *Image) xreadOldCrypt(buf []byte, e format.L2Entry, bm uint64, cstart format.GuestOff, from, to uint64) error {
	if from >= to {
		return nil
	}
	if err := im.xreadOld(buf, e, bm, cstart, from, to); err != nil {
		return err
	}
	g := &im.g
	for from < to {
		t, cnt := im.subRangeType(e, bm, g.SubIndex(from))
		end := min(to, uint64(g.SubIndex(from)+cnt)<<g.SubclusterBits())
		if t == format.SubNormal {
			if err := im.crypt.cipher.DecryptSectors(buf[from:end], im.crypt.ivSector(uint64(e.Offset())+from, uint64(cstart)+from)); err != nil {
				return err
			}
		}
		from = end
	}
	return nil
}
