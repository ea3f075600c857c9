package luksdisk

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
)

// Amend adds a passphrase to a key slot or erases slots
// (luks.Header.Amend, LV7); o.Unlock nil unlocks with the passphrase
// the disk was opened with (QEMU: the volume's own key-secret).
func (d *Disk) Amend(o luks.AmendOptions) error {
	if d.ro {
		return ErrReadOnly
	}
	if o.Unlock == nil {
		o.Unlock = d.pass
	}
	h, err := d.h.Amend(fileIO{d.f}, o)
	if err != nil {
		return qemuWords(err)
	}
	d.h = h
	return nil
}

// fileIO is the volume's file as the header area (it starts at 0).
type fileIO struct{ f block.Device }

func (a fileIO) ReadAt(p []byte, off int64) (int, error) {
	return block.ReaderAt{D: a.f}.ReadAt(p, off)
}

func (a fileIO) WriteSync(off int64, b []byte) error {
	if err := a.f.Writev(off, [][]byte{b}); err != nil {
		return err
	}
	return a.f.Flush()
}
