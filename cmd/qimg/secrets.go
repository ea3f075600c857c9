package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
)

// Encrypted images, as qemu-img opens them: secrets come from --object
// secret,id=ID,data=...|file=... (internal/secret), and an image names
// its secret with encrypt.key-secret=ID, in create's -o options or in an
// --image-opts argument (driver=qcow2,encrypt.key-secret=ID,
// file.filename=PATH).

// secrets parses every --object of the command line.
func (o *opts) secrets() (*secret.Store, error) {
	st := &secret.Store{}
	for _, a := range o.vals["object"] {
		if err := st.Add(a); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// imageSpec is the Spec of the image argument arg over def: with
// --image-opts arg is a QEMU option string (imgopen.ImageOpts), else a
// file name. Either way def.Secrets gets the --object secrets.
func (o *opts) imageSpec(arg string, def imgopen.Spec) (imgopen.Spec, error) {
	st, err := o.secrets()
	if err != nil {
		return def, err
	}
	def.Secrets = st
	if def.Opts.RepairLog == nil {
		def.Opts.RepairLog = o.repairLog
	}
	if def.Opts.Warn == nil {
		def.Opts.Warn = o.openWarn
	}
	if !o.has("image-opts") {
		def.Path = arg
		return def, nil
	}
	if def.Format != "" {
		// qemu-img's img_open: the options name the driver. A -f
		// taken over them turned a qcow2 node into raw, or the
		// reverse.
		return def, errImageOptsFormat
	}
	s, err := imgopen.ImageOpts(arg, def)
	return s, specError(arg, err)
}

// errImageOptsFormat is qemu-img's refusal of --image-opts with -f.
var errImageOptsFormat = errors.New("--image-opts and --format are mutually exclusive")

// specError is an --image-opts error that qemu-img reports when it opens
// the image ("Could not open 'SPEC': Block format 'qcow2' does not
// support the option 'x'", "Unknown driver 'x'"), as an *OpenError (no
// usage line); others, the option string's syntax, stay usage errors.
func specError(arg string, err error) error {
	var oe *imgopen.OptionError
	var ve *imgopen.ValueError
	var de *imgopen.DriverError
	switch {
	case errors.As(err, &oe):
		return &OpenError{Path: arg, Err: oe}
	case errors.As(err, &ve):
		return &OpenError{Path: arg, Err: ve}
	case errors.As(err, &de):
		return &OpenError{Path: arg, Err: formatError(de.Name)}
	}
	return err
}

// resolveEncrypt fills the passphrase of create's encrypt.key-secret
// from the --object secrets.
func (o *opts) resolveEncrypt(e *qcow2.EncryptOptions) error {
	if e.KeySecret == "" {
		return nil
	}
	st, err := o.secrets()
	if err != nil {
		return err
	}
	p, err := st.Passphrase(e.KeySecret)
	if err != nil {
		return err
	}
	e.Passphrase = p
	return nil
}

// encryptLine is the encrypt.* part of qemu-img create's "Formatting"
// line: the options given, in QEMU's order.
func encryptLine(req *createRequest) string {
	var b strings.Builder
	e := req.opts.Encrypt
	if req.given["encryption"] {
		// The legacy switch, first, as QEMU's option list has it.
		fmt.Fprintf(&b, "encryption=%s ", req.show("encryption", ""))
	}
	for _, k := range qcow2.EncryptOptionNames {
		if !req.given[k] {
			continue
		}
		v := map[string]string{"encrypt.format": e.Format, "encrypt.key-secret": e.KeySecret,
			"encrypt.cipher-alg": e.CipherAlg, "encrypt.cipher-mode": e.CipherMode,
			"encrypt.hash-alg": e.HashAlg, "encrypt.ivgen-alg": e.IVGenAlg, "encrypt.ivgen-hash-alg": e.IVGenHashAlg,
			"encrypt.iter-time": fmt.Sprint(e.IterTime.Milliseconds())}[k]
		fmt.Fprintf(&b, "%s=%s ", k, req.show(k, v))
	}
	return b.String()
}

// luksAreaBytes is the size of the LUKS header area an image created
// with co's encryption options gets (QEMU's measure adds it): the phdr
// in 4096 bytes, then eight key slots of key bytes x 4000 stripes, each
// rounded up to 4096 (crypto/luks.Create's layout). A cipher setting
// QEMU refuses is refused here in its words.
func luksAreaBytes(co *qcow2.CreateOptions) (int64, error) {
	e := &co.Encrypt
	if e.Format == "" || e.Format == "aes" { // legacy AES: no header area, no key needed
		return 0, nil
	}
	if e.KeySecret == "" {
		return 0, fmt.Errorf("Parameter 'encrypt.key-secret' is required for cipher")
	}
	n, err := e.LUKSAreaBytes()
	return int64(n), err
}

// refuseBackingOptions refuses the backing.* options of an image a
// command opens without its backing file, as QEMU's open with
// BDRV_O_NO_BACKING leaves them to nobody (qemu-img info, bitmap,
// rebase -u): "Could not open 'SPEC': Block format 'qcow2' does not
// support the option 'backing.encrypt.key-secret'".
func refuseBackingOptions(s imgopen.Spec) error {
	names := s.Opts.BackingOptions.Names()
	if strings.HasPrefix(s.Path, "json:") {
		names = imgopen.SpecBackingOptions(s.Path) // a json: name's own
	}
	if len(names) == 0 {
		return nil
	}
	name := s.Path
	if s.Name != "" {
		name = s.Name
	}
	return &OpenError{Path: name, Err: fmt.Errorf("Block format 'qcow2' does not support the option 'backing.%s'", names[len(names)-1])}
}
