package luks

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"
)

// AmendOptions are QEMU's amend options of a LUKS header (qemu-img amend
// -o state=...,new-secret=...,old-secret=...,keyslot=...,iter-time=...
// of a luks volume, the same as encrypt.* of a qcow2 image): add a
// passphrase to a key slot, or erase slots.
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
	// slot with (QEMU: the image's own key-secret).
	Unlock []byte
	// Force: qemu-img amend --force (overwrite an active slot, erase
	// the last one).
	Force bool
}

// HeaderIO reads and writes the header area of one LUKS header: offset
// 0 is its first byte (a luks volume's file, a qcow2 image's crypto
// header clusters). WriteSync returns once the bytes are durable.
type HeaderIO interface {
	io.ReaderAt
	WriteSync(off int64, b []byte) error
}

// Amend adds a passphrase to a key slot of h, or erases slots, as QEMU's
// qcrypto_block_luks_amend_options does, with its checks and words,
// through a, and returns the header now on disk (h is left as it was).
// A new slot's key material is durable before the header that enables
// it; an erased slot is disabled in a durable header before its
// material is overwritten: a crash leaves the old passphrases or the
// new ones working, the master key and so the data untouched.
func (h *Header) Amend(a HeaderIO, o AmendOptions) (*Header, error) {
	nh := *h
	var err error
	if o.Active {
		err = nh.addKey(a, o)
	} else {
		err = nh.eraseKeys(a, o)
	}
	if err != nil {
		return nil, err
	}
	return &nh, nil
}

func (h *Header) addKey(a HeaderIO, o AmendOptions) error {
	if !o.HasNew {
		return errors.New("'new-secret' is required to activate a keyslot")
	}
	if o.HasOld {
		return errors.New("'old-secret' must not be given when activating keyslots")
	}
	slot := -1
	if o.HasKeyslot {
		if o.Keyslot < 0 || o.Keyslot >= NumKeySlots {
			return fmt.Errorf("Invalid keyslot %d specified, must be between 0 and %d", uint32(o.Keyslot), NumKeySlots-1)
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
	mk, err := h.MasterKey(a, o.Unlock)
	if err != nil {
		return err
	}
	so := SlotOptions{IterTime: o.IterTime, Iterations: o.Iterations, Rand: rand.Reader}
	if !o.HasIterTime {
		so.IterTime = 0 // QEMU's default
	} else if o.IterTime == 0 && o.Iterations == 0 {
		so.Iterations = MinIterations
	}
	mat, err := h.AddSlot(slot, mk, o.New, so)
	if err != nil {
		return err
	}
	if err := a.WriteSync(int64(h.Slots[slot].KeyMaterialOffset)*SectorSize, mat); err != nil {
		return fmt.Errorf("Failed to write to keyslot %d: %w", slot, err)
	}
	return h.store(a)
}

func (h *Header) eraseKeys(a HeaderIO, o AmendOptions) error {
	switch {
	case o.HasNew:
		return errors.New("'new-secret' must not be given when erasing keyslots")
	case o.HasIterTime:
		return errors.New("'iter-time' must not be given when erasing keyslots")
	}
	var erase []int
	switch {
	case o.HasKeyslot:
		if o.Keyslot < 0 || o.Keyslot >= NumKeySlots {
			return fmt.Errorf("Invalid keyslot %d specified, must be between 0 and %d", o.Keyslot, NumKeySlots-1)
		}
		slot := int(o.Keyslot)
		if o.HasOld {
			mk, err := h.SlotKey(a, slot, o.Old)
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
			mk, err := h.SlotKey(a, i, o.Old)
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
		if err := h.store(a); err != nil {
			return err
		}
		garbage := make([]byte, n)
		if _, err := rand.Read(garbage); err != nil {
			return err
		}
		if err := a.WriteSync(int64(h.Slots[i].KeyMaterialOffset)*SectorSize, garbage); err != nil {
			return fmt.Errorf("Failed to erase keyslot %d: %w", i, err)
		}
	}
	return nil
}

// store writes h's phdr at the start of the area, durably.
func (h *Header) store(a HeaderIO) error {
	b, err := h.Encode()
	if err != nil {
		return err
	}
	return a.WriteSync(0, b)
}
