package qcow2

import (
	"errors"
	"fmt"
	"strings"
)

// BackingOptions are the options of a backing file that a header names,
// as QEMU's backing.* options of a qcow2 node give them (its key, and
// its own backing file's): `--image-opts
// driver=qcow2,file.filename=top.qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0`.
// Each applies to one format; the backing file's format (its header's
// backing format, or probed) decides, and an option its format does not
// take fails the open, in QEMU's words, as does a missing key.
type BackingOptions struct {
	// Passphrase unlocks an encrypted qcow2 backing file
	// (backing.encrypt.key-secret; Options.Passphrase).
	Passphrase []byte
	// EncryptFormat, when set, must be a qcow2 backing file's
	// encryption format (backing.encrypt.format; Options.EncryptFormat).
	EncryptFormat string
	// KeyPassphrase unlocks a LUKS backing file (backing.key-secret, the
	// luks driver's option).
	KeyPassphrase []byte
	// EncryptKeySecret and KeySecret are the ids of the secrets given
	// (backing.encrypt.key-secret, backing.key-secret), for messages:
	// an open for metadata only (Options.NoKey) looks no secret up.
	EncryptKeySecret, KeySecret string
	// NoBacking opens the backing file without its own backing file
	// (backing.backing=null).
	NoBacking bool
	// Backing are the options of the backing file's own backing file
	// (backing.backing.*).
	Backing *BackingOptions
}

// optionNames are the QEMU option names set in b, for a format that
// takes none of them.
func (b *BackingOptions) optionNames() []string {
	var names []string
	if b.Passphrase != nil || b.EncryptKeySecret != "" {
		names = append(names, "encrypt.key-secret")
	}
	if b.EncryptFormat != "" {
		names = append(names, "encrypt.format")
	}
	if b.KeyPassphrase != nil || b.KeySecret != "" {
		names = append(names, "key-secret")
	}
	if b.Backing != nil {
		names = append(names, "backing") // backing=null: any format takes it
	}
	return names
}

// Names are the QEMU names of the options b sets, its own backing
// file's after its own ("encrypt.key-secret", "backing.key-secret").
func (b *BackingOptions) Names() []string {
	if b == nil {
		return nil
	}
	var names []string
	for _, n := range b.optionNames() {
		if n != "backing" {
			names = append(names, n)
		}
	}
	if b.NoBacking {
		names = append(names, "backing")
	}
	for _, n := range b.Backing.Names() {
		names = append(names, "backing."+n)
	}
	return names
}

// check refuses the options a backing file of format fmtName, opened,
// does not take, as QEMU's open does ("Block format 'raw' does not
// support the option 'encrypt.key-secret'"). It runs after the open, as
// QEMU's looks for a missing key first.
func (b *BackingOptions) check(fmtName string) error {
	if b == nil {
		return nil
	}
	var bad []string
	for _, n := range b.optionNames() {
		switch {
		case fmtName == FormatQcow2 && n != "key-secret":
		case fmtName == "luks" && n == "key-secret":
		case fmtName == "vmdk" && n == "backing":
		default:
			bad = append(bad, n)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	if len(bad) == 1 && bad[0] == "backing" {
		return errors.New("Driver doesn't support backing files") // QEMU's words
	}
	return fmt.Errorf("Block format '%s' does not support the option '%s'", fmtName, strings.Join(bad, "', '"))
}

// Apply sets b's options for a backing file of format fmtName on o: for
// a program that opens a backing file itself (a commit's base), as Open
// opens it (nil b: none).
func (b *BackingOptions) Apply(o *Options, fmtName string) {
	if b == nil {
		return
	}
	switch fmtName {
	case FormatQcow2:
		o.Passphrase, o.EncryptFormat = b.Passphrase, b.EncryptFormat
	case "luks":
		o.Passphrase = b.KeyPassphrase
	}
	o.NoBacking = o.NoBacking || b.NoBacking
	o.BackingOptions = b.Backing
}
