package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/crypto/luks"
)

// AmendEncryption adds a passphrase to a key slot of the image's LUKS
// header, or erases slots: qemu-img amend -o encrypt.state=...,
// encrypt.new-secret=... (luks.Header.Amend: a new slot's material is
// durable before the header that enables it, an erased slot disabled
// durably before its material is overwritten). It writes inside the
// crypto header area's clusters only; no refcount, table or guest byte
// changes, so a crash leaves the image consistent with the old
// passphrases or the new ones. Not concurrent with other amendments.
func (im *Image) AmendEncryption(o luks.AmendOptions) error {
	if im.crypt == nil {
		return errors.New("qcow2: the image is not encrypted")
	}
	if im.crypt.legacy {
		return errors.New("Only LUKS encryption options can be amended") // QEMU's words
	}
	if im.ro || im.corrupt {
		return ErrReadOnly
	}
	h, err := im.crypt.header.Amend(cryptAreaIO{im}, o)
	if err != nil {
		return err
	}
	im.crypt.header = *h
	return nil
}

// cryptAreaIO is the crypto header area as luks.HeaderIO: offset 0 is
// its first byte.
type cryptAreaIO struct{ im *Image }

func (a cryptAreaIO) ReadAt(p []byte, off int64) (int, error) {
	area := a.im.crypt.area
	if off < 0 || off+int64(len(p)) > int64(area.Length) {
		return 0, fmt.Errorf("qcow2: %d bytes at %d of the %d-byte encryption header area", len(p), off, area.Length)
	}
	return devReaderAt{a.im}.ReadAt(p, int64(area.Offset)+off)
}

func (a cryptAreaIO) WriteSync(off int64, b []byte) error {
	area := a.im.crypt.area
	if off < 0 || off+int64(len(b)) > int64(area.Length) {
		return fmt.Errorf("qcow2: %d bytes at %d of the %d-byte encryption header area", len(b), off, area.Length)
	}
	if err := a.im.dev.Writev(int64(area.Offset)+off, [][]byte{b}); err != nil {
		return err
	}
	return a.im.dev.Flush()
}
