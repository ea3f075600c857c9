package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/internal/cnum"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
)

// luksAmendOptions are QEMU's amend options of a LUKS header (qemu-img
// amend -f luks -o help; a qcow2 image's are the same under encrypt.).
var luksAmendOptions = []createOption{
	{"iter-time", "num", "Time to spend in PBKDF in milliseconds"},
	{"keyslot", "num", "Select a single keyslot to modify explicitly"},
	{"new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"},
	{"old-secret", "str", "Select all keyslots that match this password"},
	{"state", "str", "Select new state of affected keyslots (active/inactive)"},
}

// luksAmendValues reads amend options of a LUKS header (kv's keys
// without prefix, which the type errors name: "encrypt." for qcow2) into
// luks.AmendOptions, the secrets they name looked up in st, in QEMU's
// words.
func luksAmendValues(kv [][2]string, prefix string, st *secret.Store, force bool) (luks.AmendOptions, error) {
	ao := luks.AmendOptions{Force: force}
	state := ""
	for _, p := range kv {
		k, v := p[0], p[1]
		switch k {
		case "keyslot":
			// QEMU's number parser takes -1 as 2^64-1: an int64
			// keyslot of -1, refused by the driver's range check.
			n, ok := cnum.Uint64(v)
			if !ok {
				return ao, fmt.Errorf("Parameter '%s%s' expects a number", prefix, k)
			}
			ao.Keyslot, ao.HasKeyslot = int64(n), true
			continue
		case "iter-time":
			n, ok := cnum.Uint64(v)
			if !ok {
				return ao, fmt.Errorf("Parameter '%s%s' expects a number", prefix, k)
			}
			if n > 1<<31 {
				return ao, fmt.Errorf("iter-time=%d is too large", n)
			}
			ao.IterTime, ao.HasIterTime = time.Duration(n)*time.Millisecond, true
			continue
		}
		var err error
		switch k {
		case "state":
			state = v
		case "new-secret":
			ao.New, err = st.Passphrase(v)
			ao.HasNew = true
		case "old-secret":
			ao.Old, err = st.Passphrase(v)
			ao.HasOld = true
		default:
			return ao, fmt.Errorf("Invalid parameter '%s%s'", prefix, k)
		}
		if err != nil {
			return ao, err
		}
	}
	switch state {
	case "":
		return ao, errors.New("Parameter 'state' is missing")
	case "active":
		ao.Active = true
	case "inactive":
	default:
		return ao, &enumError{param: "state", value: state}
	}
	return ao, nil
}

// amendLUKS is qemu-img amend of a LUKS volume, opened with its key: add
// a passphrase to a key slot or erase slots (luksdisk.Disk.Amend). ok is
// false when the image is not a LUKS volume (the caller goes on as for
// qcow2).
func amendLUKS(o *opts, r *amendRequest) (ok bool, err error) {
	img, err := openImage(r.spec)
	if err != nil {
		return true, err
	}
	defer img.Close()
	if img.LUKS == nil {
		return false, nil
	}
	st, err := o.secrets()
	if err != nil {
		return true, err
	}
	var kv [][2]string
	for _, s := range o.vals["o"] {
		ps, err := qcow2.SplitOptions(s)
		if err != nil {
			return true, err
		}
		kv = append(kv, ps...)
	}
	ao, err := luksAmendValues(kv, "", st, o.has("force"))
	if err != nil {
		return true, err
	}
	return true, img.LUKS.Amend(ao) // unlocked by the volume's own key-secret
}

// amendEncryption applies a qcow2 image's encrypt.* amend options (the
// image's own encrypt.key-secret unlocks it), as QEMU's
// qcow2_amend_options hands them to its crypto layer.
func amendEncryption(im *qcow2.Image, r *amendRequest) error {
	for _, p := range r.crypt {
		// QEMU's option parser checks the numbers before the driver
		// looks at the image.
		if _, ok := cnum.Uint64(p[1]); !ok && (p[0] == "keyslot" || p[0] == "iter-time") {
			return fmt.Errorf("Parameter 'encrypt.%s' expects a number", p[0])
		}
	}
	if !im.Encrypted() {
		return errors.New("Can't amend encryption options - encryption not present")
	}
	ao, err := luksAmendValues(r.crypt, "encrypt.", r.secrets, r.force)
	if err != nil {
		return err
	}
	ao.Unlock = r.spec.Opts.Passphrase
	return im.AmendEncryption(ao)
}
