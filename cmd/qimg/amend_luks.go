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
	if err := luksAmendParse(kv, prefix); err != nil {
		return ao, err
	}
	state := ""
	for _, p := range kv {
		k, v := p[0], p[1]
		var err error
		switch k {
		case "keyslot":
			// QEMU's number parser takes -1 as 2^64-1: an int64
			// keyslot of -1, refused by the driver's range check.
			n, _ := cnum.Uint64(v)
			ao.Keyslot, ao.HasKeyslot = int64(n), true
		case "iter-time":
			n, _ := cnum.Uint64(v)
			if n > 1<<31 {
				err = fmt.Errorf("iter-time=%d is too large", n)
			}
			ao.IterTime, ao.HasIterTime = time.Duration(n)*time.Millisecond, true
		case "state":
			state = v
		case "new-secret":
			ao.New, err = st.Passphrase(v)
			ao.HasNew = true
		case "old-secret":
			ao.Old, err = st.Passphrase(v)
			ao.HasOld = true
		}
		if err != nil {
			return ao, amendValueError{err}
		}
	}
	switch state {
	case "":
		return ao, amendValueError{errors.New("Parameter 'state' is missing")}
	case "active":
		ao.Active = true
	case "inactive":
	default:
		return ao, amendValueError{&enumError{param: "state", value: state}}
	}
	return ao, nil
}

// luksAmendParse is what qemu-img's option parser refuses of a LUKS
// header's amend options, before the driver sees them (qemu-img -p has
// printed nothing yet): an option it does not take, and keyslot or
// iter-time not a number.
func luksAmendParse(kv [][2]string, prefix string) error {
	for _, p := range kv {
		switch k := p[0]; k {
		case "keyslot", "iter-time":
			if _, ok := cnum.Uint64(p[1]); !ok {
				return fmt.Errorf("Parameter '%s%s' expects a number", prefix, k)
			}
		case "state", "new-secret", "old-secret":
		case "size", "key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg":
			// A LUKS image's creation options (qemu-img create -f
			// luks -o help): QEMU's hint (a qcow2 image's encrypt.
			// ones get it from parseAmendOptions).
			return fmt.Errorf("Invalid parameter '%s%s'\nThis option is only supported for image creation", prefix, k)
		default:
			return fmt.Errorf("Invalid parameter '%s%s'", prefix, k)
		}
	}
	return nil
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
	if _, value := err.(amendValueError); err != nil && !value {
		return true, err // qemu-img's option parser's
	}
	if r.started != nil {
		r.started()
	}
	if err != nil {
		return true, err
	}
	return true, img.LUKS.Amend(ao) // unlocked by the volume's own key-secret
}

// amendEncryption applies a qcow2 image's encrypt.* amend options (the
// image's own encrypt.key-secret unlocks it), as QEMU's
// qcow2_amend_options hands them to its crypto layer.
func amendEncryption(im *qcow2.Image, r *amendRequest) error {
	// (QEMU's option parser has checked the numbers: amendOptionsParsed.)
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
