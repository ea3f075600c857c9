package imgopen

import (
	"fmt"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luksdisk"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vmdk"
)

// openLayer is the engine's qcow2.BackingOpener: a VMDK or VHD image
// under a qcow2 image, opened read-only and locked as its own opens
// lock it (vmdk's KD6 for a VMDK's own parents), as a qcow2.Layer (Q23).
func openLayer(path, format string, o qcow2.Options) (block.Device, error) {
	return openLayerInto(path, format, o, nil)
}

// openLayerInto is openLayer; a json: spec's throttle nodes go into ts
// (nil: a set of their own).
func openLayerInto(path, format string, o qcow2.Options, ts *throttleSet) (block.Device, error) {
	if strings.HasPrefix(path, "json:") {
		return openSpecLayer(path, format, o, ts)
	}
	if IsNBDName(path) {
		return openSpecLayer(NBDSpec(path, ""), format, o, ts) // an export: its nbd node
	}
	if format == "luks" && !o.NoKey && o.Passphrase == nil {
		// A plain name carries no key-secret (backing.key-secret
		// gives one): QEMU's words.
		return nil, luksdisk.ErrNoKey
	}
	if format != "vmdk" && format != "vpc" && format != "luks" {
		return nil, &qcow2.FormatError{Format: format}
	}
	if err := checkFileType(path); err != nil {
		return nil, err
	}
	op := o.Opener
	if op == nil {
		op = qcow2.DefaultOpener
	}
	f, err := op(path, true)
	if err != nil {
		return nil, err
	}
	if err := lockFormatFile(f, path, format, true, o); err != nil {
		f.Close()
		return nil, err
	}
	if format == "luks" {
		// Metadata only (above) without the key.
		d, err := luksdisk.Open(f, luksdisk.Options{NoKey: o.Passphrase == nil, Passphrase: o.Passphrase})
		if err != nil {
			f.Close()
			return nil, err
		}
		return luksLayer{d}, nil
	}
	if format == "vpc" {
		d, err := vhd.Open(f, vhd.Options{Name: path})
		if err != nil {
			f.Close()
			return nil, err
		}
		return vhdLayer{d}, nil
	}
	d, err := openVMDKFile(f, path, op, o, o.NoBacking, nil, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return vmdkLayer{d}, nil
}

// vmdkLayer is a VMDK image as a qcow2.Layer: its own grains' status,
// and its parent below it.
type vmdkLayer struct{ *vmdk.Disk }

// LayerStatus implements qcow2.Layer: an unallocated run is the
// parent's to decide, zero where there is none or past its end, as
// QEMU's bdrv_co_block_status says (vmdk's KD5, KD6).
func (l vmdkLayer) LayerStatus(off, n int64) (qcow2.LayerStatus, error) {
	e, err := l.Status(off, n)
	if err != nil {
		return qcow2.LayerStatus{}, err
	}
	s := qcow2.LayerStatus{Len: min(e.Length, n), Allocated: e.Present, Data: e.Data, Zero: e.Zero, Offset: e.Offset, File: e.File}
	if p := l.Parent(); !e.Present && p != nil {
		psize, err := p.Size()
		if err != nil {
			return qcow2.LayerStatus{}, err
		}
		if off < psize {
			s.Len, s.Zero = min(s.Len, psize-off), false
		}
	}
	return s, nil
}

// LayerBacking implements qcow2.Layer.
func (l vmdkLayer) LayerBacking() block.Device {
	if p := l.Parent(); p != nil {
		return vmdkLayer{p}
	}
	return nil
}

// vhdLayer is a VHD image as a qcow2.Layer: every block is its own
// (vhd's VD5), nothing lies below.
type vhdLayer struct{ *vhd.Disk }

// LayerStatus implements qcow2.Layer.
func (l vhdLayer) LayerStatus(off, n int64) (qcow2.LayerStatus, error) {
	e, err := l.Status(off, n)
	if err != nil {
		return qcow2.LayerStatus{}, err
	}
	return qcow2.LayerStatus{Len: min(e.Length, n), Allocated: true, Data: e.Data, Zero: e.Zero, Offset: e.Offset}, nil
}

// LayerBacking implements qcow2.Layer.
func (vhdLayer) LayerBacking() block.Device { return nil }

// openSpecLayer opens a backing file name that is a json: spec (Q23) as
// QEMU opens one: the tree it describes, read-only, its file names
// relative to the working directory; the header's backing format, when
// it names one, is the root's driver, over the spec's (as OpenSpec's
// Format: QEMU opens the backing file with that format). o's options (the chain above it among
// them, for the loop check) are every qcow2 node's defaults. A qcow2
// root is returned as the *qcow2.Image, so the chain walks through it;
// any other tree closes as a whole.
func openSpecLayer(spec, format string, o qcow2.Options, ts *throttleSet) (block.Device, error) {
	root, err := parseSpec(spec, false)
	if err != nil {
		return nil, err
	}
	if format != "" {
		root["driver"] = format
	}
	// The name comes from the image, not the user: no node that writes
	// files (a mirror creates and overwrites its target) may open.
	if hasDriver(root, "mirror") {
		return nil, fmt.Errorf("a json: backing file may not contain a mirror node")
	}
	o.ReadOnly = true
	var secrets *secret.Store
	if ts != nil {
		secrets = ts.secrets
	}
	op, err := openTree(root, Spec{ReadOnly: true, Opts: o, Secrets: secrets}, ts)
	if err != nil {
		return nil, err
	}
	if op.Image != nil && op.Dev == block.Device(op.Image) {
		return op.Image, nil // it closes what it stands on (CloseAfter)
	}
	// A VMDK or VHD root is a Layer, as a plain backing file of that
	// format is (openLayer); it closes the nodes under it.
	if op.VMDK != nil && op.Dev == block.Device(op.VMDK) {
		return vmdkLayer{op.VMDK}, nil
	}
	if op.VHD != nil && op.Dev == block.Device(op.VHD) {
		return vhdLayer{op.VHD}, nil
	}
	if op.LUKS != nil && op.Dev == block.Device(op.LUKS) {
		return luksLayer{op.LUKS}, nil
	}
	if dm, ok := op.Dev.(block.DataMapper); ok {
		return specDataDev{specDev{op.Dev, op}, dm}, nil
	}
	return specDev{op.Dev, op}, nil
}

// SpecHasDriver says the json: or key=value spec names driver drv in any
// node (false when it does not parse: its open says why).
func SpecHasDriver(spec, drv string) bool {
	root, err := parseSpec(spec, false)
	return err == nil && hasDriver(root, drv)
}

// hasDriver says a node of the tree v has driver drv.
func hasDriver(v any, drv string) bool {
	switch x := v.(type) {
	case map[string]any:
		if x["driver"] == drv {
			return true
		}
		for _, c := range x {
			if hasDriver(c, drv) {
				return true
			}
		}
	case []any:
		for _, c := range x {
			if hasDriver(c, drv) {
				return true
			}
		}
	}
	return false
}

// specDev is a backing tree that closes as a whole (Opened.Close).
type specDev struct {
	block.Device
	op *Opened
}

func (d specDev) Close() error { return d.op.Close() }

// Unwrap returns the tree's root device: qemu-img map shows the host
// file's offsets through the raw windows in it (qcow2's windowOffset).
func (d specDev) Unwrap() block.Device { return d.Device }

// specDataDev is a specDev whose device maps its holes (a raw window,
// filter.Raw over a host file): the engine reads them as zeros below a
// qcow2 image (holeProber) and map shows them as QEMU does.
type specDataDev struct {
	specDev
	dm block.DataMapper
}

var _ block.ZeroMapper = specDataDev{}

// DataRun implements block.DataMapper.
func (d specDataDev) DataRun(off, n int64) (bool, int64, error) { return d.dm.DataRun(off, n) }

// ZeroRun implements block.ZeroMapper (an NBD export's zero flag).
func (d specDataDev) ZeroRun(off, n int64) (bool, bool, int64, error) {
	return block.ZeroRun(d.dm, off, n)
}

// AllocatedSize implements block.DataMapper.
func (d specDataDev) AllocatedSize() (int64, error) { return d.dm.AllocatedSize() }

// StatusDev is the device whose block status QEMU would report for
// the image (qcow2.NewStatusWalker): the qcow2 image, a VMDK or VHD
// image as a qcow2.Layer (unallocated grains are no raw data), a raw
// node over a format node as its child's status (RawNodeLayer), else Dev.
func (o *Opened) StatusDev() block.Device {
	switch {
	case o.Image != nil:
		return o.Image
	case o.VMDK != nil && o.Dev == block.Device(o.VMDK):
		return vmdkLayer{o.VMDK}
	case o.VHD != nil && o.Dev == block.Device(o.VHD):
		return vhdLayer{o.VHD}
	}
	if l, ok := RawNodeLayer(o.Dev); ok {
		return l // a raw node passes its child's status through
	}
	return o.Dev
}
