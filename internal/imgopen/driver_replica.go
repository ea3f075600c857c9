package imgopen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
)

// The drivers over replicas: blkverify compares two, quorum votes among
// several, mirror copies one onto another.

func (b *builder) blkverify(n *node) (block.Device, error) {
	test, err := b.child(n, "test")
	if err != nil {
		return nil, err
	}
	ref, err := b.child(n, "raw")
	if err != nil {
		test.Close()
		return nil, err
	}
	v := filter.NewBlkverify(test, ref)
	b.setNoDir(v, "blkverify")
	return v, nil
}

func (b *builder) quorum(n *node) (block.Device, error) {
	kids, err := n.list("children")
	if err != nil {
		return nil, err
	}
	thr := len(kids)/2 + 1
	if n.has("vote-threshold") {
		s, _ := n.str("vote-threshold", "")
		if thr, err = strconv.Atoi(s); err != nil || thr < 1 || thr > len(kids) {
			return nil, fmt.Errorf("image spec: %s: invalid vote-threshold %q (1..%d)", n.path, s, len(kids))
		}
	}
	rewrite, err := n.boolean("rewrite-corrupted", false)
	if err != nil {
		return nil, err
	}
	devs := make([]block.Device, len(kids))
	opened := 0
	var errs []error
	for i, k := range kids {
		d, err := b.build(k, fmt.Sprintf("%s.%d", n.name("children"), i))
		if err != nil {
			// QEMU refuses to open the quorum; we keep a failed child that
			// every request skips, so a damaged replica does not take the
			// others down (the vote still needs threshold healthy ones).
			errs = append(errs, err)
			d = filter.Failed{Err: fmt.Errorf("quorum child %d: %w", i, err)}
		} else {
			opened++
		}
		devs[i] = d
	}
	closeAll := func() {
		for _, d := range devs {
			d.Close()
		}
	}
	if opened < thr {
		closeAll()
		return nil, fmt.Errorf("image spec: %s: only %d of %d quorum children opened, vote-threshold %d: %w",
			n.path, opened, len(kids), thr, errors.Join(errs...))
	}
	q, err := filter.NewQuorum(devs, filter.QuorumOptions{Threshold: thr, Rewrite: rewrite})
	if err != nil {
		closeAll()
		return nil, err
	}
	b.setNoDir(q, "quorum")
	return q, nil
}

func (b *builder) mirror(n *node) (block.Device, error) {
	if b.def.ReadOnly {
		// A read-only open writes no file (and a json: backing name,
		// which the image supplies, opens read-only).
		return nil, fmt.Errorf("image spec: %s: a mirror writes its target: not in a read-only open", n.path)
	}
	var mo filter.MirrorOptions
	var err error
	if mo.Granularity, err = n.size("granularity"); err != nil {
		return nil, err
	}
	wait, err := n.boolean("wait", true)
	if err != nil {
		return nil, err
	}
	if g := mo.Granularity; g != 0 && (g < 512 || g&(g-1) != 0) {
		return nil, fmt.Errorf("image spec: %s: mirror granularity %d is not a power of two >= 512", n.name("granularity"), g)
	}
	tv, err := n.need("target")
	if err != nil {
		return nil, err
	}
	// Every key is read: a refused spec creates, grows or copies
	// nothing (build checks the keys only once the node is open).
	if _, err := n.need("file"); err != nil {
		return nil, err
	}
	if err := n.done(); err != nil {
		return nil, err
	}
	src, err := b.child(n, "file")
	if err != nil {
		return nil, err
	}
	var tgt block.Device
	created := ""
	if name, ok := tv.(string); ok {
		tgt, created, err = b.createRaw(name)
	} else {
		tgt, err = b.build(tv, n.name("target"))
	}
	if err != nil {
		src.Close()
		return nil, err
	}
	mo.Paused = true // started once the whole spec opened (openTree)
	m, err := filter.NewMirror(src, tgt, mo)
	if err != nil {
		src.Close()
		tgt.Close()
		if created != "" {
			os.Remove(created)
		}
		return nil, err
	}
	b.mirrors = append(b.mirrors, m)
	b.inheritDir(m, src)
	if created != "" {
		b.created = append(b.created, created)
	}
	if wait {
		b.beforeClose = append(b.beforeClose, m.Wait)
	}
	return m, nil
}

// createRaw opens a mirror's target file name: a raw file, created if
// missing (QEMU's drive-mirror mode=absolute-paths with format=raw), with
// the default cache mode and AIO, and the image locks of a writable raw
// image (openRaw), as QEMU takes them on a mirror's target: another
// writer of a qcow2 image there is refused, both ways round.
//
// A file it created is removed again when the open fails (a lock held
// by another process, say); created names it otherwise, for the caller
// to remove if it fails later.
func (b *builder) createRaw(name string) (d block.Device, created string, err error) {
	op, err := Opener(b.def.Cache, b.def.AIO)
	if err != nil {
		return nil, "", err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	switch {
	case err == nil:
		created = name
		err = f.Close()
	case errors.Is(err, fs.ErrExist):
		err = nil
	}
	if err == nil {
		d, err = openRaw(name, op, false, b.def.Opts, false)
	}
	if err != nil && created != "" {
		os.Remove(name)
		created = ""
	}
	return d, created, err
}
