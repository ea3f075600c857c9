package imgopen

import (
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
)

// openDataFile opens Spec.DataFile with op for an image opened with o,
// locked as QEMU locks a data file; nil when name is "".
func openDataFile(name string, op qcow2.Opener, o qcow2.Options) (block.Device, error) {
	if name == "" {
		return nil, nil
	}
	d, err := op(name, o.ReadOnly)
	if err != nil {
		return nil, &qcow2.DataFileOpenError{Name: name, Err: err}
	}
	if err := qcow2.LockDataFile(d, name, o.ReadOnly, o); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// dataFileOpt reads the data-file key of qemu-img's --image-opts into
// s.DataFile: data-file=PATH or data-file.filename=PATH.
func dataFileOpt(n *node, s *Spec) error {
	v, ok := n.get("data-file")
	if !ok {
		return nil
	}
	if name, ok := v.(string); ok {
		// QEMU takes a string for a node's name.
		return fmt.Errorf("Cannot find device='%s' nor node-name='%s'", name, name)
	}
	if s.DataFile = fileName(v); s.DataFile == "" {
		return fmt.Errorf("image spec: data-file: expected data-file.filename=PATH")
	}
	return nil
}

// dataFileChild builds a qcow2 node's "data-file" (QEMU's data-file
// option, qcow2 DF1): a file name or a node, in place of the data file
// the image's header names; read-only when the image is. nil when the
// node has none.
func (b *builder) dataFileChild(n *node, ro bool) (block.Device, error) {
	v, ok := n.get("data-file")
	if !ok {
		return nil, nil
	}
	prev := b.parentRO
	b.parentRO = ro
	defer func() { b.parentRO = prev }()
	return b.build(v, n.name("data-file"))
}
