package qcow2

import (
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/qcow2/format"
)

// The data path of encrypted images (docs/luks.md). Guest bytes leave
// and enter the engine here:
//
//   - writevCrypt: every guest write (and zero buffers of WriteZeroes)
//     becomes whole 512-byte sectors: a partial head or tail sector is
//     read, decrypted and merged under imageCrypt.sectors, so that no write
//     into the same sector runs in between.
//   - writeHost: in-place and early writes (Q10) encrypt into a bounce
//     buffer (never the caller's buffers) with IV = host offset / 512.
//   - writeWithCOWCrypt: a new cluster is written whole, as ciphertext:
//     the bytes around the guest data (copied from the old cluster,
//     decrypted with its own host sectors, or from the backing file, or
//     zeros) are encrypted with the new cluster's sectors. Zeros on disk
//     are not encrypted zeros, so none of the zero-COW shortcuts apply
//     (no fresh-space skip, no efficient zeroing), and the COW areas are
//     durable before the link even in fresh space (Q2).
//   - readDecrypt: normal clusters decrypt; zero and unallocated
//     clusters read zeros without the disk; compressed clusters are
//     plaintext (QEMU writes them unencrypted).

const sectorSize = luks.SectorSize

// writevCrypt writes n bytes of bufs at guest offset off of an
// encrypted image as whole sectors, cluster by cluster.
func (im *Image) writevCrypt(off int64, bufs [][]byte, n int64) error {
	ic := im.crypt
	if ic.cipher == nil {
		return ErrNoKey
	}
	if n == 0 {
		return nil
	}
	if off%sectorSize == 0 && n%sectorSize == 0 {
		r := ic.sectors.lock(off, n, false)
		defer ic.sectors.unlock(r)
		return im.writeClusters(off, bufs, n)
	}
	r := ic.sectors.lock(off, n, true)
	defer ic.sectors.unlock(r)
	start := off &^ (sectorSize - 1)
	end := (off + n + sectorSize - 1) &^ (sectorSize - 1)
	head := make([]byte, sectorSize)
	tail := head
	if start < off || end-start == sectorSize {
		if err := im.readvTo(start, [][]byte{head}, im.hsize.Load()); err != nil {
			return err
		}
	}
	if end-sectorSize != start && end > off+n {
		tail = make([]byte, sectorSize)
		if err := im.readvTo(end-sectorSize, [][]byte{tail}, im.hsize.Load()); err != nil {
			return err
		}
	}
	vec := make([][]byte, 0, len(bufs)+2)
	if start < off {
		vec = append(vec, head[:off-start])
	}
	vec = append(vec, bufs...)
	if end > off+n {
		vec = append(vec, tail[sectorSize-(end-off-n):])
	}
	return im.writeClusters(start, vec, end-start)
}

// writeHost writes the guest data v (at guest offset goff) at host
// offset host of a data cluster: as it is, or encrypted (ivSector).
func (im *Image) writeHost(host format.HostOff, goff format.GuestOff, v [][]byte) error {
	if im.crypt == nil {
		return im.dev.Writev(int64(host), v)
	}
	return im.writeEncrypted(host, goff, v)
}

// writeEncrypted encrypts v (whole sectors at a sector-aligned host
// offset, guest offset goff) through a bounce buffer and writes it at
// host.
func (im *Image) writeEncrypted(host format.HostOff, goff format.GuestOff, v [][]byte) error {
	return im.writeEncryptedTo(im.dev, host, goff, v)
}

// writeEncryptedTo is writeEncrypted onto d (the image's device, or its
// external data file: DF1, sectors numbered by their offset there).
func (im *Image) writeEncryptedTo(d block.Device, host format.HostOff, goff format.GuestOff, v [][]byte) error {
	c := im.crypt.cipher
	if c == nil {
		return ErrNoKey
	}
	n := uint64(block.VecLen(v))
	if uint64(host)%sectorSize != 0 || n%sectorSize != 0 {
		return fmt.Errorf("qcow2: encrypted write of %d bytes at host offset %#x is not whole sectors", n, uint64(host))
	}
	bp := im.clusterBuf()
	defer im.putClusterBuf(bp)
	vp := getVec()
	defer putVec(vp)
	buf := *bp
	for done := uint64(0); done < n; {
		k := min(uint64(len(buf)), n-done)
		b := buf[:k]
		*vp = sliceVec((*vp)[:0], v, int64(done), int64(k))
		copyFromVec(b, *vp)
		at := uint64(host) + done
		if err := c.EncryptSectors(b, im.crypt.ivSector(at, uint64(goff)+done)); err != nil {
			return err
		}
		if err := block.WriteAt(d, b, int64(at)); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// copyFromVec copies the vector v into dst.
func copyFromVec(dst []byte, v [][]byte) {
	for _, b := range v {
		n := copy(dst, b)
		dst = dst[n:]
	}
}

// writeWithCOWCrypt is writeWithCOW for encrypted images: the whole new
// cluster is written as ciphertext under its own host sectors. It
// reports true (flush before the link, Q2) whenever it wrote bytes around
// the guest data, fresh space or not: a hole is not encrypted zeros.
func (im *Image) writeWithCOWCrypt(p *allocation, v [][]byte, n int64) (bool, error) {
	c := im.crypt.cipher
	if c == nil {
		return false, ErrNoKey
	}
	host := p.st.host
	g := &im.g
	cs := g.ClusterSize
	in := g.InCluster(p.goff)
	headLen, tailLen := in, cs-in-uint64(n)
	if headLen == 0 && tailLen == 0 {
		return false, im.writeEncrypted(host, p.goff, v)
	}
	bp := im.clusterBuf()
	defer im.putClusterBuf(bp)
	buf := *bp
	cstart := p.goff - format.GuestOff(in)
	if err := im.readCOW(buf, cstart, p.old, p.src, headLen, tailLen); err != nil {
		return false, err
	}
	if p.src == cowOld {
		// The old cluster's ciphertext is bound to its host sectors
		// (LUKS; legacy AES: to the same guest sectors).
		if err := c.DecryptSectors(buf, im.crypt.ivSector(uint64(p.old.Offset()), uint64(cstart))); err != nil {
			return false, err
		}
	}
	vp := getVec()
	*vp = sliceVec((*vp)[:0], v, 0, n)
	copyFromVec(buf[in:in+uint64(n)], *vp)
	putVec(vp)
	if err := c.EncryptSectors(buf, im.crypt.ivSector(uint64(host), uint64(cstart))); err != nil {
		return false, err
	}
	im.c.cowBytes.Add(int64(headLen + tailLen))
	return true, block.WriteAt(im.dev, buf, int64(host))
}

// readDecrypt reads the guest bytes of a normal cluster run at host
// (guest offset goff) into v and decrypts them: whole sectors through a
// bounce buffer.
func (im *Image) readDecrypt(host format.HostOff, goff format.GuestOff, v [][]byte) error {
	c := im.crypt.cipher
	if c == nil {
		return ErrNoKey
	}
	n := uint64(block.VecLen(v))
	bp := im.clusterBuf()
	defer im.putClusterBuf(bp)
	vp := getVec()
	defer putVec(vp)
	buf := *bp
	pos, end := uint64(host), uint64(host)+n
	done := int64(0)
	for pos < end {
		a := pos &^ (sectorSize - 1)
		l := min(uint64(len(buf)), (end+sectorSize-1)&^(sectorSize-1)-a)
		b := buf[:l]
		if err := im.readCrypted(format.HostOff(a), b); err != nil {
			return err
		}
		// a is pos rounded down to its sector; the guest offset moves
		// with the host one inside the run.
		ga := uint64(goff) + (pos - uint64(host)) - (pos - a)
		if err := c.DecryptSectors(b, im.crypt.ivSector(a, ga)); err != nil {
			return err
		}
		k := min(a+l, end) - pos
		*vp = sliceVec((*vp)[:0], v, done, int64(k))
		copyToVec(*vp, b[pos-a:pos-a+k])
		done += int64(k)
		pos += k
	}
	return nil
}
