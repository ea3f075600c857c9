package imgopen

import (
	"errors"
	"fmt"
	"os"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
)

// The drivers that hold the data: a host file, a qcow2 image, a raw window.

func (b *builder) file(n *node) (block.Device, error) {
	name, err := n.str("filename", "")
	if err != nil {
		return nil, err
	}
	if name == "" {
		if name, err = n.str("file", ""); err != nil {
			return nil, err
		}
	}
	if name == "" {
		return nil, errNoFileName
	}
	locking, err := n.str("locking", "auto")
	if err != nil {
		return nil, err
	}
	if locking != "on" && locking != "off" && locking != "auto" {
		return nil, fmt.Errorf("image spec: %s: invalid locking %q (on, off, auto)", n.name("locking"), locking)
	}
	d, err := b.openFile(name, n, locking == "off")
	if err == nil && locking == "off" {
		if b.unlocked == nil {
			b.unlocked = map[block.Device]bool{}
		}
		b.unlocked[d] = true
	}
	return d, err
}

// imageOf returns the image of a device the qcow2 driver returned, nil
// for any other device.
func imageOf(dev block.Device) *qcow2.Image {
	im, _ := dev.(*qcow2.Image)
	return im
}

// qcow2 returns the *qcow2.Image; the devices opened for it (its file
// node's, its data file's) close with it (qcow2.Options.CloseAfter), so a
// chain sees an *Image also on a stack (throttle, raw window, ...).
func (b *builder) qcow2(n *node) (block.Device, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	o := b.def.Opts
	o.ReadOnly = o.ReadOnly || ro
	o.RefuseCorrupt = true // a writable open, as QEMU's
	// Not repair, which QEMU's qcow2 driver does not take (qimg check
	// -r is the repair): a spec with it is refused as QEMU refuses it,
	// never an image marked corrupt opened writable.
	for _, k := range qcow2.OptionNames {
		if k == "read-only" || k == "repair" || !n.has(k) {
			continue
		}
		s, err := n.str(k, "")
		if err != nil {
			return nil, err
		}
		if err := setQcow2Option(&o, n.name(k), k, s); err != nil {
			return nil, err
		}
	}
	if err := b.encryptKey(n, &o); err != nil {
		return nil, err
	}
	if none, bo, err := qcow2Backing(n, b.def.Secrets, o.NoKey); err != nil {
		return nil, err
	} else if none {
		o.NoBacking = true
	} else if bo != nil {
		o.BackingOptions = bo
	}
	if o.Opener, err = Opener(cache, aio); err != nil {
		return nil, err
	}
	o.OpenBacking = b.throttles.openLayer
	prevRO, prevCache, prevW := b.parentRO, b.parentCache, b.parentWritable
	b.parentRO, b.parentCache, b.parentWritable = o.ReadOnly, cache, !o.ReadOnly
	name, dev, err := b.fileChild(n)
	b.parentRO, b.parentCache, b.parentWritable = prevRO, prevCache, prevW
	if err != nil {
		return nil, err
	}
	if b.unlocked[dev] {
		o.NoLock = true // file.locking=off
	}
	data, err := b.dataFileChild(n, o.ReadOnly)
	if err != nil {
		if dev != nil {
			dev.Close()
		}
		return nil, err
	}
	o.DataDevice = data
	closeData := func() {
		if data != nil {
			data.Close()
		}
	}
	if name != "" {
		if _, err := os.Stat(name); err != nil {
			closeData()
			return nil, FileOpenError(name, err) // QEMU's file driver's words
		}
		if data != nil {
			o.CloseAfter = data.Close
		}
		im, err := qcow2.Open(name, o)
		if err != nil {
			closeData()
			return nil, err // QEMU's words: the outer "Could not open" names the spec
		}
		b.setPath(im, name)
		return im, nil
	}
	if err := b.lockThrough(dev, qcow2.FormatQcow2, o.ReadOnly, o.ForceShare); err != nil {
		dev.Close()
		closeData()
		return nil, err
	}
	o.Path = b.paths[dev]
	if d := b.noDir[dev]; d != "" && o.Path == "" {
		o.NoBaseDir = noBaseDir(d)
	}
	o.CloseAfter = func() error {
		err := dev.Close()
		if data != nil {
			err = errors.Join(err, data.Close())
		}
		return err
	}
	im, err := qcow2.OpenDevice(dev, o)
	if err != nil {
		dev.Close()
		closeData()
		return nil, err
	}
	b.inheritDir(im, dev)
	return im, nil
}

func (b *builder) raw(n *node) (block.Device, error) {
	var o filter.RawOptions
	var err error
	if o.Offset, err = n.size("offset"); err != nil {
		return nil, err
	}
	if o.Size, o.Fixed, err = n.sizeGiven("size"); err != nil {
		return nil, err
	}
	_, _, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	prevW := b.parentWritable
	b.parentWritable = !ro // its file node may not be read-only then
	name, child, err := b.fileChild(n)
	b.parentWritable = prevW
	if err == nil && name != "" {
		child, err = b.openFile(name, n, false)
	}
	if err != nil {
		return nil, err
	}
	o.Sectors = true // QEMU's block layer counts a file's length in sectors
	if err := checkWindow(child, o); err != nil {
		child.Close()
		return nil, err // QEMU's words alone, naming no node
	}
	r, err := filter.NewRaw(child, o)
	if err != nil {
		child.Close()
		return nil, err
	}
	b.inheritDir(r, child)
	return r, nil
}

// checkWindow refuses a raw window as QEMU 7.2's raw_apply_options does,
// in its order, once the file is open: an offset past the file's end
// (its length in whole sectors), a window past it, and a size that is
// not a multiple of 512 (the last sector would be rounded up, reaching
// out of the window). The messages are QEMU's, its double space too.
func checkWindow(child block.Device, o filter.RawOptions) error {
	n, err := child.Size()
	if err != nil {
		return err
	}
	n = qcow2.RawLen(n)
	switch {
	case o.Offset > n:
		return fmt.Errorf("Offset (%d) cannot be greater than size of the containing file (%d)", o.Offset, n)
	case o.Size > n-o.Offset:
		return fmt.Errorf("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)", o.Offset, o.Size, n)
	case o.Size%512 != 0:
		return errors.New("Specified size is not multiple of 512")
	}
	return nil
}

// fileChild reads the "file" of qcow2 and raw: a file name (see fileName)
// for the driver to open itself, or else the node under it, built.
func (b *builder) fileChild(n *node) (name string, child block.Device, err error) {
	fv, err := n.need("file")
	if err != nil {
		return "", nil, err
	}
	if name := fileName(fv); name != "" {
		return name, nil, nil
	}
	child, err = b.build(fv, n.name("file"))
	return "", child, err
}

// fileLocking takes a file node's locking key (on, off, auto) out of v,
// for qemu-img's --image-opts, which names one file (fileName): noLock
// is locking=off. v is returned as it is when it has no locking key.
func fileLocking(v any) (rest any, noLock bool, err error) {
	m, ok := v.(map[string]any)
	if !ok {
		return v, false, nil
	}
	l, ok := m["locking"]
	if !ok {
		return v, false, nil
	}
	if l != "on" && l != "off" && l != "auto" {
		return nil, false, fmt.Errorf("image spec: file.locking: invalid %v (on, off, auto)", l)
	}
	c := make(map[string]any, len(m))
	for k, x := range m {
		if k != "locking" {
			c[k] = x
		}
	}
	return c, l == "off", nil
}

// fileName returns the file name of a "file" that is a string or a
// {"driver":"file","filename":...} node without other options (the driver
// may be left out, as QEMU fills in file for a lone filename); "" if it is
// some other node.
func fileName(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		f, _ := v["filename"].(string)
		d, set := v["driver"]
		if f != "" && (d == "file" && len(v) == 2 || !set && len(v) == 1) {
			return f
		}
	}
	return ""
}
