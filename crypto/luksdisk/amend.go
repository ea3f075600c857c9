package luksdisk

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
)

// AmendOptions are QEMU's amend options of a LUKS volume (qemu-img amend
// -o state=...,new-secret=...,old-secret=...,keyslot=...,iter-time=...):
// add a passphrase to a key slot, or erase slots (LV7).
type AmendOptions struct {
	// Active: state=active (add a passphrase); else state=inactive
	// (erase slots).
	Active bool
	// New is new-secret's passphrase (HasNew: given).
	New    []byte
	HasNew bool
	// Old is old-secret's passphrase: the slots to erase are those it
	// opens (HasOld: given).
	Old    []byte
	HasOld bool
	// Keyslot is keyslot= (HasKeyslot: given).
	Keyslot    int64
	HasKeyslot bool
	// IterTime is iter-time= (HasIterTime: given); Iterations, if not
	// 0, fixes the count instead (tests).
	IterTime    time.Duration
	HasIterTime bool
	Iterations  uint32
	// Unlock is the passphrase that recovers the master key to add a
	// slot with; nil: the one the disk was opened with (QEMU: the
	// volume's own key-secret).
	Unlock []byte
	// Force: qemu-img amend --force (overwrite an active slot, erase
	// the last one).
	Force bool
}

// Amend adds a passphrase to a key slot or erases slots, as QEMU's
// qcrypto_block_luks_amend_options does, with its checks and words. A new
// slot's key material is written and flushed before the header that
// enables it; an erased slot's header is written and flushed before its
// material is overwritten (LV7).
func (d *Disk) Amend(o AmendOptions) error {
	if d.ro {
		return ErrReadOnly
	}
	if o.Active {
		return d.addKey(o)
	}
	return d.eraseKeys(o)
}

func (d *Disk) addKey(o AmendOptions) error {
	h := *d.h
	if !o.HasNew {
		return errors.New("'new-secret' is required to activate a keyslot")
	}
	if o.HasOld {
		return errors.New("'old-secret' must not be given when activating keyslots")
	}
	slot := -1
	if o.HasKeyslot {
		if o.Keyslot < 0 || o.Keyslot >= luks.NumKeySlots {
			return fmt.Errorf("Invalid keyslot %d specified, must be between 0 and %d", uint32(o.Keyslot), luks.NumKeySlots-1)
		}
		slot = int(o.Keyslot)
	} else {
		for i := range h.Slots {
			if !h.Slots[i].Enabled() {
				slot = i
				break
			}
		}
		if slot < 0 {
			return errors.New("Can't add a keyslot - all keyslots are in use")
		}
	}
	if !o.Force && h.Slots[slot].Enabled() {
		return fmt.Errorf("Refusing to overwrite active keyslot %d - please erase it first", slot)
	}
	unlock := o.Unlock
	if unlock == nil {
		unlock = d.pass
	}
	mk, err := h.MasterKey(block.ReaderAt{D: d.f}, unlock)
	if err != nil {
		return qemuWords(nil, err)
	}
	so := luks.SlotOptions{IterTime: o.IterTime, Iterations: o.Iterations, Rand: rand.Reader}
	if !o.HasIterTime {
		so.IterTime = 0 // QEMU's default
	} else if o.IterTime == 0 && o.Iterations == 0 {
		so.Iterations = luks.MinIterations
	}
	mat, err := h.AddSlot(slot, mk, o.New, so)
	if err != nil {
		return err
	}
	if err := d.writeFlushed(int64(h.Slots[slot].KeyMaterialOffset)*sector, mat); err != nil {
		return fmt.Errorf("Failed to write to keyslot %d: %w", slot, err)
	}
	return d.storeHeader(&h)
}

func (d *Disk) eraseKeys(o AmendOptions) error {
	h := *d.h
	switch {
	case o.HasNew:
		return errors.New("'new-secret' must not be given when erasing keyslots")
	case o.HasIterTime:
		return errors.New("'iter-time' must not be given when erasing keyslots")
	}
	r := block.ReaderAt{D: d.f}
	var erase []int
	switch {
	case o.HasKeyslot:
		if o.Keyslot < 0 || o.Keyslot >= luks.NumKeySlots {
			return fmt.Errorf("Invalid keyslot %d specified, must be between 0 and %d", o.Keyslot, luks.NumKeySlots-1)
		}
		slot := int(o.Keyslot)
		if o.HasOld {
			mk, err := h.SlotKey(r, slot, o.Old)
			if err != nil {
				return err
			}
			if mk == nil {
				return fmt.Errorf("Given keyslot %d doesn't contain the given old password for erase operation", slot)
			}
		}
		if !o.Force && !h.Slots[slot].Enabled() {
			return fmt.Errorf("Given keyslot %d is already erased (inactive) ", slot)
		}
		if !o.Force && h.ActiveSlots() == 1 {
			return fmt.Errorf("Attempt to erase the only active keyslot %d which will erase all the data in the image irreversibly - refusing operation", slot)
		}
		erase = []int{slot}
	case o.HasOld:
		for i := range h.Slots {
			mk, err := h.SlotKey(r, i, o.Old)
			if err != nil {
				return err
			}
			if mk != nil {
				erase = append(erase, i)
			}
		}
		if len(erase) == 0 {
			return errors.New("No keyslots match given (old) password for erase operation")
		}
		if !o.Force && len(erase) == h.ActiveSlots() {
			return errors.New("All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation")
		}
	default:
		return errors.New("To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given")
	}
	for _, i := range erase {
		n, err := h.DisableSlot(i)
		if err != nil {
			return err
		}
		if err := d.storeHeader(&h); err != nil {
			return err
		}
		garbage := make([]byte, n)
		if _, err := rand.Read(garbage); err != nil {
			return err
		}
		if err := d.writeFlushed(int64(h.Slots[i].KeyMaterialOffset)*sector, garbage); err != nil {
			return fmt.Errorf("Failed to erase keyslot %d: %w", i, err)
		}
	}
	return nil
}

// storeHeader writes h's phdr at the start of the file, flushed, and
// makes it the disk's.
func (d *Disk) storeHeader(h *luks.Header) error {
	b, err := h.Encode()
	if err != nil {
		return err
	}
	if err := d.writeFlushed(0, b); err != nil {
		return err
	}
	nh := *h
	d.h = &nh
	return nil
}

// writeFlushed writes b at file offset off and flushes it.
func (d *Disk) writeFlushed(off int64, b []byte) error {
	if err := d.f.Writev(off, [][]byte{b}); err != nil {
		return err
	}
	return d.f.Flush()
}
