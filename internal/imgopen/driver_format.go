package imgopen

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vhd"
	vhdformat "github.com/qring/qring/vhd/format"
	"github.com/qring/qring/vmdk"
)

// The drivers of the other formats qring reads: vmdk and vpc (VHD), with
// QEMU 7.2's keys: file (a file name or a node), read-only, backing
// (null only: a VMDK image without its parent, as QEMU's backing=null),
// and vpc's force_size_calc (chs, current_size). A VMDK descriptor's
// extents.N options are refused (qring opens extent files itself).

// formatFile opens the file child of a vmdk or vpc node n: a file name
// opened here with n's cache and aio and locked as Open locks the
// format's file, or a node, built with n's read-only and cache passed
// down. name is the host file's name ("" when unknown).
func (b *builder) formatFile(n *node, format string, ro bool, cache, aio string) (name string, dev block.Device, err error) {
	prevRO, prevCache, prevW := b.parentRO, b.parentCache, b.parentWritable
	b.parentRO, b.parentCache, b.parentWritable = ro, cache, !ro
	name, dev, err = b.fileChild(n)
	b.parentRO, b.parentCache, b.parentWritable = prevRO, prevCache, prevW
	if err != nil {
		return "", nil, err
	}
	if dev != nil {
		if err := b.lockThrough(dev, format, ro, b.def.Opts.ForceShare); err != nil {
			dev.Close()
			return "", nil, err
		}
		return b.paths[dev], dev, nil
	}
	if err := checkFileType(name); err != nil {
		return "", nil, err
	}
	op, err := Opener(cache, aio)
	if err != nil {
		return "", nil, err
	}
	if dev, err = op(name, ro); err != nil {
		return "", nil, FileOpenError(name, err)
	}
	if err := lockFormatFile(dev, name, format, ro, b.def.Opts); err != nil {
		dev.Close()
		return "", nil, err
	}
	b.setPath(dev, name)
	return name, dev, nil
}

// noBackingKey reads a format node's backing key: only null (QEMU's "no
// backing file") or "" (its deprecated form) is taken; a string names
// another node, which qimg's command lines never define (QEMU's "Cannot
// find device"; in key=value form backing=null is that string too).
func noBackingKey(n *node) (bool, error) {
	v, ok := n.get("backing")
	if !ok {
		return false, nil
	}
	if s, isStr := v.(string); isStr && s != "" {
		return false, &ValueError{Msg: fmt.Sprintf("Could not open backing file: Cannot find device='%s' nor node-name='%s'", s, s)}
	}
	if v != nil && v != "" {
		return false, fmt.Errorf("image spec: %s: only backing=null is supported", n.name("backing"))
	}
	return true, nil
}

func (b *builder) vmdk(n *node) (block.Device, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	ro = ro || b.def.Opts.ReadOnly
	noParent, err := noBackingKey(n)
	if err != nil {
		return nil, err
	}
	if n.has("extents") {
		return nil, &OptionError{Driver: "vmdk", Option: "extents"}
	}
	name, f, err := b.formatFile(n, "vmdk", ro, cache, aio)
	if err != nil {
		return nil, err
	}
	op, err := Opener(cache, aio)
	if err != nil {
		f.Close()
		return nil, err
	}
	o := b.def.Opts
	noParent = noParent || o.NoBacking
	d, err := openVMDKFile(f, name, op, o, noParent, nil, !ro)
	if errors.Is(err, vmdk.ErrNotWritable) && !ro {
		if r, rerr := openVMDKFile(f, name, op, o, noParent, nil, false); rerr == nil {
			r.Close() // closes f
			return nil, readOnlyVMDK{err}
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	b.inheritDir(d, f)
	return d, nil
}

func (b *builder) vpc(n *node) (block.Device, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	ro = ro || b.def.Opts.ReadOnly
	if _, err := noBackingKey(n); err != nil {
		return nil, err
	}
	calc, err := sizeCalcKey(n)
	if err != nil {
		return nil, err
	}
	name, f, err := b.formatFile(n, "vpc", ro, cache, aio)
	if err != nil {
		return nil, err
	}
	d, err := vhd.Open(f, vhd.Options{Name: name, Writable: !ro, SizeCalc: calc})
	if err != nil {
		f.Close()
		return nil, err
	}
	b.inheritDir(d, f)
	return d, nil
}

// sizeCalcKey reads vpc's force_size_calc as QEMU's vpc_parse_options.
func sizeCalcKey(n *node) (vhdformat.SizeCalc, error) {
	if !n.has("force_size_calc") {
		return vhdformat.SizeAuto, nil
	}
	s, err := n.str("force_size_calc", "")
	if err != nil {
		return 0, err
	}
	switch s {
	case "chs":
		return vhdformat.SizeCHS, nil
	case "current_size":
		return vhdformat.SizeCurrent, nil
	}
	return 0, &ValueError{Msg: fmt.Sprintf("Invalid size calculation mode: '%s'", s)}
}
