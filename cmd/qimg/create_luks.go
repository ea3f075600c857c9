package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/qring/qring/crypto/luks"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// luksCreate are a LUKS volume's create options (-f luks), as given.
type luksCreate struct {
	vals map[string]string
	pass []byte // the key-secret's passphrase, looked up in parseCreate
	// secretErr is the key-secret's lookup failure, refused after the
	// Formatting line as qemu-img does.
	secretErr error
}

// luksCreateOptions are QEMU's luks create options (qemu-img create -f
// luks -o help lists them; preallocation is the file driver's).
var luksCreateOptions = []createOption{
	{"cipher-alg", "str", "Name of encryption cipher algorithm"},
	{"cipher-mode", "str", "Name of encryption cipher mode"},
	{"hash-alg", "str", "Name of encryption hash algorithm"},
	{"iter-time", "num", "Time to spend in PBKDF in milliseconds"},
	{"ivgen-alg", "str", "Name of IV generator algorithm"},
	{"ivgen-hash-alg", "str", "Name of IV generator hash algorithm"},
	{"key-secret", "str", "ID of the secret that provides the keyslot passphrase"},
	{"size", "size", "Virtual disk size"},
}

// luksShownOrder is the order of the options in qemu-img create's
// Formatting line for luks, after size.
var luksShownOrder = []string{"key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg", "iter-time", "preallocation"}

// setLUKSOption sets one -o option of create -f luks, its type checked
// at once as QEMU's option parser does; the values only when the volume
// is created (createLUKS).
func (req *createRequest) setLUKSOption(k, v string) error {
	opts := append(slices.Clip(luksCreateOptions), createOption{"preallocation", "str", ""})
	v, err := checkOptionType(opts, k, v)
	if err != nil {
		return err
	}
	req.given[k] = true
	if k == "size" {
		req.opts.Size = optionSize(v)
		req.sizeSet = req.opts.Size != -1
		return nil
	}
	if req.luks.vals == nil {
		req.luks.vals = map[string]string{}
	}
	req.luks.vals[k] = v
	return nil
}

// luksFormatting is the options part of the Formatting line.
func luksFormatting(req *createRequest) string {
	s := fmt.Sprintf("size=%d", req.opts.Size)
	for _, k := range luksShownOrder {
		if v, ok := req.luks.vals[k]; ok {
			s += fmt.Sprintf(" %s=%s", k, v)
		}
	}
	return s
}

// lookupLUKSSecret finds the key-secret's passphrase among o's --object
// secrets (a failure is kept for createLUKS, after Formatting).
func (req *createRequest) lookupLUKSSecret(o *opts) {
	id, ok := req.luks.vals["key-secret"]
	if !ok {
		return
	}
	st, err := o.secrets()
	if err == nil {
		req.luks.pass, err = st.Passphrase(id)
	}
	req.luks.secretErr = err
}

// luksOptions checks the values given and turns them into crypto/luks's
// options, with QEMU's words for what it refuses too.
func (c *luksCreate) luksOptions() (luks.CreateOptions, error) {
	var lo luks.CreateOptions
	// Every value QEMU names is crypto/luks's; combinations QEMU
	// refuses are refused by luks.Create in its words.
	check := func(k string, known []string) (string, error) {
		v, ok := c.vals[k]
		if ok && !slices.Contains(known, v) {
			return "", &enumError{param: k, value: v}
		}
		return v, nil
	}
	var err error
	if lo.Cipher, err = check("cipher-alg", luks.QEMUCiphers); err != nil {
		return lo, err
	}
	if lo.Mode, err = check("cipher-mode", luks.QEMUModes); err != nil {
		return lo, err
	}
	if lo.IVGen, err = check("ivgen-alg", luks.QEMUIVGens); err != nil {
		return lo, err
	}
	if lo.IVHash, err = check("ivgen-hash-alg", luks.QEMUHashes); err != nil {
		return lo, err
	}
	if lo.Hash, err = check("hash-alg", luks.QEMUHashes); err != nil {
		return lo, err
	}
	if v, ok := c.vals["iter-time"]; ok {
		ms, _ := strconv.ParseUint(v, 10, 64) // checkOptionType's decimal
		if ms > 1<<31 {
			return lo, fmt.Errorf("iter-time=%d is too large", ms)
		}
		lo.IterTime = time.Duration(ms) * time.Millisecond
		if ms == 0 {
			lo.Iterations = luks.MinIterations // QEMU's floor for no time at all
		}
	}
	return lo, nil
}

// createLUKS makes a LUKS volume as qemu-img create -f luks does (QEMU's
// block_crypto_co_create_opts_luks): the header and slot 0's key material
// from the start of the file, the payload after them, size bytes long
// (preallocated as the file driver does: the file's zeros, which decrypt
// to noise, as QEMU's). A volume that fails is removed, as QEMU removes
// it.
func createLUKS(req *createRequest) error {
	c := &req.luks
	prealloc := c.vals["preallocation"]
	switch prealloc {
	case "", "off", "metadata": // metadata: the file driver's off
		prealloc = "off"
	case "falloc", "full":
	default:
		return fmt.Errorf("invalid parameter value: %s", prealloc)
	}
	lo, err := c.luksOptions()
	if err != nil {
		return err
	}
	if _, ok := c.vals["key-secret"]; !ok {
		return errors.New("Parameter 'key-secret' is required for cipher")
	}
	if c.secretErr != nil {
		return c.secretErr
	}
	size := req.opts.Size
	if size < 0 {
		return fmt.Errorf("The image size is too large for file format 'luks'")
	}
	err = createEmpty(req.file, req.opts.Hints, func(f *uring.File) error {
		h, area, _, err := luks.Create(c.pass, lo)
		if err != nil {
			return err
		}
		// The header and slot 0's key material; the other slots'
		// zeros stay holes, as QEMU leaves them.
		for off := 0; off < len(area); off += 4096 {
			blk := area[off:min(off+4096, len(area))]
			if isZero(blk) {
				continue
			}
			if err := f.Writev(int64(off), [][]byte{blk}); err != nil {
				return err
			}
		}
		end := int64(h.PayloadBytes()) + size
		if prealloc == "off" {
			return f.Truncate(end)
		}
		return growRawPrealloc(req.file, end, prealloc)
	})
	if err != nil {
		os.Remove(req.file)
	}
	return err
}

// measureLUKSTarget reads measure -O luks's -o options as QEMU's
// block_crypto_measure does: the volume's options (their values checked
// as create checks them), a key-secret that names a secret, and the
// payload offset their cipher gives (luksAreaBytes).
func measureLUKSTarget(o *opts) (*measureTarget, error) {
	req := &createRequest{format: "luks", given: map[string]bool{}}
	for _, s := range o.vals["o"] {
		kv, err := qcow2.SplitOptions(s)
		if err != nil {
			return nil, err
		}
		for _, p := range kv {
			if isHintOption(p[0]) {
				// The file driver's, checked and not read (as for
				// qcow2 and raw: setMeasureOption).
				if _, err := checkOptionType(fileHintOptions, p[0], p[1]); err != nil {
					return nil, fmt.Errorf("%v\nInvalid options for file format 'luks'", err)
				}
				continue
			}
			if err := req.setLUKSOption(p[0], p[1]); err != nil {
				return nil, fmt.Errorf("%v\nInvalid options for file format 'luks'", err)
			}
		}
	}
	lo, err := req.luks.luksOptions()
	if err != nil {
		return nil, err
	}
	if _, ok := req.luks.vals["key-secret"]; !ok {
		return nil, errors.New("Parameter 'key-secret' is required for cipher")
	}
	if req.lookupLUKSSecret(o); req.luks.secretErr != nil {
		return nil, req.luks.secretErr
	}
	area, err := luks.AreaBytes(lo)
	if err != nil {
		return nil, err
	}
	return &measureTarget{format: "luks", cryptBytes: int64(area)}, nil
}
