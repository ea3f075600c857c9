package imgopen

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
)

// Encrypted qcow2 images (LUKS): the passphrase comes from a secret
// object (--object secret,id=sec0,data=...; Spec.Secrets) that the
// image's encrypt.key-secret option names, as QEMU's --image-opts
// driver=qcow2,encrypt.key-secret=sec0,file.filename=x.qcow2.

// encryptKey reads the qcow2 node's "encrypt" options (key-secret, and
// format, which must be luks when given) into o.Passphrase.
func (b *builder) encryptKey(n *node, o *qcow2.Options) error {
	v, ok := n.get("encrypt")
	if !ok {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("image spec: %s: expected encrypt.key-secret=ID", n.name("encrypt"))
	}
	return encryptOptions(newNode(m, n.name("encrypt")), b.def.Secrets, o)
}

// encryptOptions applies an encrypt node to o.
func encryptOptions(e *node, store *secret.Store, o *qcow2.Options) error {
	f, err := e.str("format", "luks")
	if err != nil {
		return err
	}
	if f != "luks" && f != "aes" {
		return fmt.Errorf("image spec: %s: encryption format %q is not supported (luks, aes)", e.name("format"), f)
	}
	if _, given := e.get("format"); given {
		o.EncryptFormat = f // the header's must be the same (qcow2 checks)
	}
	id, err := e.str("key-secret", "")
	if err != nil {
		return err
	}
	if err := e.done(); err != nil {
		return err
	}
	if id == "" || o.NoKey {
		return nil // metadata only: QEMU looks no secret up (BDRV_O_NO_IO)
	}
	if store == nil {
		store = &secret.Store{}
	}
	p, err := store.Passphrase(id)
	if err != nil {
		return err // in QEMU's words ("No secret with id 'ID'")
	}
	o.Passphrase = p
	return nil
}

// ImageOpts turns a qemu-img --image-opts argument for one image on a
// plain file (driver=qcow2|raw, file.filename=PATH or file=PATH,
// file.locking=on|off|auto, file.aio=threads|io_uring, cache.direct and
// cache.no-flush on either node (cachekeys.go), the qcow2 open options,
// encrypt.key-secret=ID, encrypt.format=luks) into a Spec for Open:
// Path, Format, and the engine options in Opts (over def's), the
// passphrase looked up in def.Secrets. Stacks of drivers need OpenSpec.
func ImageOpts(arg string, def Spec) (Spec, error) {
	s := def
	s.Name = arg // what messages call the image, as qemu-img's
	root, err := parseSpec(arg, true)
	if err != nil {
		return s, err
	}
	n := newNode(root, "")
	drv, err := n.str("driver", "")
	if err != nil {
		return s, err
	}
	if drv != "" && drv != "qcow2" && drv != "raw" && drv != "vmdk" && drv != "vpc" && drv != "luks" && drv != "file" && drv != "nbd" {
		return s, &DriverError{Name: drv}
	}
	if drv == "" {
		if f := fileName(root["file"]); f != "" {
			if p, err := qcow2.Probe(f); err == nil && p == "luks" {
				drv = p // its key-secret: the driver tree below
			}
		}
	}
	if drv == "raw" && (n.has("offset") || n.has("size")) || drv == "luks" || drv == "file" || drv == "nbd" || stackedFile(root) {
		// A raw window (filter.Raw), or a format over another node than
		// a file (driver=raw,file.driver=qcow2): a driver tree, opened as
		// the json: spec it is (OpenSpec), as qemu-img --image-opts
		// opens it. So is a LUKS volume (its key-secret: luks.go), and
		// a file node or an NBD export at the root, no format over it
		// (driver=file, driver=nbd).
		b, err := json.Marshal(root)
		if err != nil {
			return s, err
		}
		s.Path, s.Name, s.Format = "json:"+string(b), arg, ""
		if f, ok := root["filename"].(string); ok && drv == "file" {
			s.QemuName = f // a file node at the root: QEMU names it by its file
		}
		return s, nil
	}
	// Without driver=, the format is probed, as QEMU probes it.
	s.Format = drv
	fv, ok := n.get("file")
	switch {
	case !ok && drv == "":
		return s, &ValueError{Msg: "Must specify either driver or file"}
	case !ok:
		return s, &ValueError{Msg: `A block device must be specified for "file"`}
	}
	fv, noLock, err := fileLocking(fv)
	if err != nil {
		return s, err
	}
	if noLock {
		s.Opts.NoLock = true
	}
	if n.has("cache") { // QEMU's cache.direct, cache.no-flush, for the file too
		if s.Cache, err = cacheOf(n, s.Cache, drv, false); err != nil {
			return s, err
		}
	}
	if fv, err = fileIOKeys(fv, &s); err != nil {
		return s, err
	}
	if n.has("read-only") {
		// A generic key, every driver's (qcow2's engine option too,
		// below). Not the command's intent (s.ReadOnly): a writable
		// command refuses read-only=on (qimg's openImage, SpecReadOnly).
		if _, err := n.boolean("read-only", false); err != nil {
			return s, &ValueError{Msg: "Parameter 'read-only' expects 'on' or 'off'"}
		}
	}
	names := map[string]bool{}
	share, err := genericKeys(n, drv, names)
	if err != nil {
		return s, err
	}
	fileShare := false
	if fv, fileShare, err = withoutGenericKeys(fv, names); err != nil {
		return s, err
	}
	if share || fileShare {
		// The open refuses it on a writable image, in QEMU's words
		// (qcow2.ErrForceShareWritable).
		s.Opts.ForceShare = true
	}
	if err := fileNodeKeys(fv); err != nil {
		return s, err
	}
	if s.Path = fileName(fv); s.Path == "" {
		return s, errNoFileName
	}
	if drv == "" {
		// Probed now, so that the format's options below apply; a
		// file that cannot be probed fails when it is opened.
		if f, err := qcow2.Probe(s.Path); err == nil && (f == "qcow2" || f == "raw" || f == "vmdk" || f == "vpc") {
			drv, s.Format, s.Probed = f, f, true
			n.m["driver"], n.used["driver"] = f, true // for done's message
		}
	}
	if drv == "vmdk" || drv == "vpc" {
		if err := formatImageOpts(n, drv, &s); err != nil {
			return s, err
		}
	}
	if drv == "qcow2" {
		noBacking, bo, err := qcow2Backing(n, def.Secrets, s.Opts.NoKey)
		if err != nil {
			return s, err
		}
		s.Opts.NoBacking = s.Opts.NoBacking || noBacking
		if bo != nil {
			s.Opts.BackingOptions = bo
			s.QemuName = qemuJSONName(root)
		}
		for _, k := range qcow2.OptionNames {
			if k == "repair" || !n.has(k) { // as qcow2 (driver_leaf.go)
				continue
			}
			v, err := n.str(k, "")
			if err != nil {
				return s, err
			}
			if err := setQcow2Option(&s.Opts, k, k, v); err != nil {
				return s, err
			}
		}
		if err := dataFileOpt(n, &s); err != nil {
			return s, err
		}
		if v, ok := n.get("encrypt"); ok {
			m, ok := v.(map[string]any)
			if !ok {
				return s, fmt.Errorf("image spec: expected encrypt.key-secret=ID")
			}
			if err := encryptOptions(newNode(m, "encrypt"), def.Secrets, &s.Opts); err != nil {
				return s, err
			}
			if _, ok := m["key-secret"]; ok {
				s.QemuName = qemuJSONName(root)
			}
		}
	}
	return s, n.done()
}

// formatImageOpts reads the keys of a vmdk or vpc node (driver_format.go)
// into s: read-only, backing=null, vpc's force_size_calc.
func formatImageOpts(n *node, drv string, s *Spec) error {
	if n.has("read-only") {
		ro, err := n.boolean("read-only", false)
		if err != nil {
			return err
		}
		s.ReadOnly = s.ReadOnly || ro
	}
	noBacking, err := noBackingKey(n)
	if err != nil {
		return err
	}
	if drv == "vmdk" {
		if n.has("extents") {
			return &OptionError{Driver: "vmdk", Option: "extents"}
		}
		s.Opts.NoBacking = s.Opts.NoBacking || noBacking
		return nil
	}
	s.SizeCalc, err = sizeCalcKey(n)
	return err
}

// fileNodeKeys refuses, as QEMU's open does, a file node naming another
// driver than file or an option the file driver here does not take
// (filename and locking only).
// stackedFile reports whether the spec's file child is a format node
// (qcow2, raw, vmdk, vpc) or an nbd node: a stack, such as a raw node over a qcow2
// image. Other drivers there keep ImageOpts's refusal.
func stackedFile(root map[string]any) bool {
	m, ok := root["file"].(map[string]any)
	if !ok {
		return false
	}
	switch m["driver"] {
	case "qcow2", "raw", "vmdk", "vpc", "luks", "nbd":
		return true // a format node, or an NBD export (its nbd node)
	}
	return false
}

func fileNodeKeys(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	if d, ok := m["driver"].(string); ok && d != "file" {
		return &DriverError{Name: d}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "driver" && k != "filename" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	return &OptionError{Driver: "file", Option: keys[0], Protocol: true}
}
