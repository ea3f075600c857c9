package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/qring/qring/crypto/luksdisk"
	"github.com/qring/qring/internal/cnum"
	"github.com/qring/qring/qcow2"
)

// luksAmendOptions are QEMU's amend options of a LUKS volume (qemu-img
// amend -f luks -o help).
var luksAmendOptions = []createOption{
	{"iter-time", "num", "Time to spend in PBKDF in milliseconds"},
	{"keyslot", "num", "Select a single keyslot to modify explicitly"},
	{"new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"},
	{"old-secret", "str", "Select all keyslots that match this password"},
	{"state", "str", "Select new state of affected keyslots (active/inactive)"},
}

// amendLUKS is qemu-img amend of a LUKS volume, opened with its key: add
// a passphrase to a key slot or erase slots (luksdisk.Amend). ok is false
// when the image is not a LUKS volume (the caller goes on as for qcow2).
func amendLUKS(o *opts, r *amendRequest) (ok bool, err error) {
	img, err := openImage(r.spec)
	if err != nil {
		return true, err
	}
	defer img.Close()
	if img.LUKS == nil {
		return false, nil
	}
	ao := luksdisk.AmendOptions{Force: o.has("force")}
	st, err := o.secrets()
	if err != nil {
		return true, err
	}
	state := ""
	for _, s := range o.vals["o"] {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return true, err
		}
		for _, p := range kv {
			v, err := p[1], error(nil)
			if p[0] == "keyslot" {
				// QEMU's number parser takes -1 as 2^64-1: an int64
				// keyslot of -1, refused by the driver's range check.
				n, ok := cnum.Uint64(v)
				if !ok {
					return true, errors.New("Parameter 'keyslot' expects a number")
				}
				ao.Keyslot, ao.HasKeyslot = int64(n), true
				continue
			}
			if v, err = checkOptionType(luksAmendOptions, p[0], p[1]); err != nil {
				return true, err
			}
			switch p[0] {
			case "state":
				state = v
			case "new-secret":
				if ao.New, err = st.Passphrase(v); err != nil {
					return true, err
				}
				ao.HasNew = true
			case "old-secret":
				if ao.Old, err = st.Passphrase(v); err != nil {
					return true, err
				}
				ao.HasOld = true
			case "iter-time":
				n, _ := strconv.ParseUint(v, 10, 64)
				if n > 1<<31 {
					return true, fmt.Errorf("iter-time=%d is too large", n)
				}
				ao.IterTime, ao.HasIterTime = time.Duration(n)*time.Millisecond, true
			}
		}
	}
	switch state {
	case "":
		return true, errors.New("Parameter 'state' is missing")
	case "active":
		ao.Active = true
	case "inactive":
	default:
		return true, &enumError{param: "state", value: state}
	}
	return true, img.LUKS.Amend(ao) // unlocked by the volume's own key-secret
}
