package imgopen

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luksdisk"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// LUKS volumes (QEMU's "luks" format, crypto/luksdisk): the passphrase
// comes from the secret object the node's key-secret names, as QEMU's
// --image-opts driver=luks,key-secret=sec0,file.filename=x.luks. A
// volume opened by name (probed, or -f luks) has no key-secret: it opens
// for its metadata only (Options.NoKey: qemu-img info), else with
// QEMU's "Parameter 'key-secret' is required for cipher".

// openLUKS opens s.Path as a LUKS volume: with the key in
// s.Opts.Passphrase (a volume qimg just created, whose create options
// named it), else for its metadata only.
func openLUKS(s Spec, op qcow2.Opener, fellBack string) (*Opened, error) {
	lo := luksdisk.Options{NoKey: s.Opts.NoKey, Passphrase: s.Opts.Passphrase}
	if lo.NoKey {
		lo.Passphrase = nil
	} else if lo.Passphrase == nil {
		return nil, luksdisk.ErrNoKey
	}
	ro := s.ReadOnly || s.Opts.ReadOnly
	f, err := op(s.Path, ro)
	if err != nil {
		return nil, err
	}
	if err := lockFormatFile(f, s.Path, "luks", ro, s.Opts); err != nil {
		f.Close()
		return nil, err
	}
	lo.Writable = !ro
	d, err := luksdisk.Open(f, lo)
	if err != nil {
		f.Close()
		return nil, err
	}
	file, _ := f.(*uring.File)
	return &Opened{Dev: d, LUKS: d, File: file, fellBack: fellBack}, nil
}

func (b *builder) luks(n *node) (block.Device, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	ro = ro || b.def.Opts.ReadOnly
	id, err := n.str("key-secret", "")
	if err != nil {
		return nil, err
	}
	// Metadata only at the root, as QEMU's BDRV_O_NO_IO: a volume under
	// a format node (driver=qcow2,file.driver=luks) is read for it.
	o := luksdisk.Options{Writable: !ro, NoKey: b.def.Opts.NoKey && n.path == ""}
	if !o.NoKey {
		if !n.has("key-secret") {
			return nil, luksdisk.ErrNoKey
		}
		store := b.def.Secrets
		if store == nil {
			store = &secret.Store{}
		}
		if o.Passphrase, err = store.Passphrase(id); err != nil {
			return nil, err // QEMU's "No secret with id 'ID'" (also for "")
		}
	}
	_, f, err := b.formatFile(n, "luks", ro, cache, aio)
	if err != nil {
		return nil, err
	}
	d, err := luksdisk.Open(f, o)
	if err != nil {
		f.Close()
		return nil, err
	}
	b.inheritDir(d, f)
	return d, nil
}

// luksLayer is a LUKS volume as a qcow2.Layer (a json: backing file with
// its key-secret): all data at no host offset the map can show, as
// QEMU's crypto driver, which has no block status, reports it.
type luksLayer struct{ *luksdisk.Disk }

// LayerStatus implements qcow2.Layer.
func (l luksLayer) LayerStatus(off, n int64) (qcow2.LayerStatus, error) {
	return qcow2.LayerStatus{Len: n, Allocated: true, Data: true, Offset: -1}, nil
}

// LayerBacking implements qcow2.Layer.
func (luksLayer) LayerBacking() block.Device { return nil }
