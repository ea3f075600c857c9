package imgopen

import (
	"errors"
	"fmt"
	"os"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/crypto/luksdisk"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vmdk"
)

// OpenSpec opens the driver tree spec describes (IsSpec syntax). defaults
// supplies what the spec leaves out: cache mode, AIO, read-only and qcow2
// engine options for every leaf (Path and WrapFile are ignored). A
// Format (-f, a header's backing format) is the root's driver, over the
// one the spec names: QEMU gives the options stated outside a json: name
// priority over those in it (qemu-img -f qcow2 'json:{"driver":"raw",
// ...}' opens qcow2; the spec's driver won here, and a write through
// the raw node overwrote the qcow2 header).
//
// Opened.Image is the top image when the root driver is qcow2 (else nil:
// metrics and qcow2-only commands then see the stack as a plain device);
// Opened.File is nil. Opened.Close first lets mirrors with wait=on
// converge, then closes the whole tree (every layer closes its children).
func OpenSpec(spec string, defaults Spec) (*Opened, error) {
	root, err := parseSpec(spec, false)
	if err != nil {
		return nil, err
	}
	if defaults.Format != "" {
		root["driver"] = defaults.Format // -f, or a header's backing format
	}
	return openTree(root, defaults, nil) // no driver: the format is probed
}

// SpecNoBacking says the root node of the json: or key=value spec sets
// its backing to null (or ""; a string, "null" in key=value form too,
// names a node): the image opens without the backing file
// its header names (false when the spec does not parse).
func SpecNoBacking(spec string) bool {
	root, err := parseSpec(spec, false)
	if err != nil {
		return false
	}
	v, ok := root["backing"]
	return ok && (v == nil || v == "")
}

// openTree opens the driver tree root (ParseSpec's), as OpenSpec; its
// throttle nodes, and those of the json: backing files under it, go into
// ts (nil: a set of its own).
func openTree(root map[string]any, defaults Spec, ts *throttleSet) (*Opened, error) {
	if ts == nil {
		ts = &throttleSet{secrets: defaults.Secrets}
	}
	b := &builder{def: defaults, throttles: ts}
	dev, err := b.build(root, "")
	if err == nil {
		// Only an accepted spec grows or copies into a mirror's target
		// (the nodes after a mirror may still refuse it).
		for _, m := range b.mirrors {
			if err = m.Start(); err != nil {
				dev.Close()
				break
			}
		}
	}
	if err != nil {
		for _, name := range b.created {
			os.Remove(name) // a mirror target it created
		}
		return nil, err
	}
	o := &Opened{Dev: dev, throttles: ts, ProbedRaw: b.probedRaw}
	switch d := dev.(type) {
	case *filter.Raw:
		o.RawOffset, o.RawFixed = d.Offset(), d.Fixed()
		if c := d.Unwrap(); b.hostFiles[c] {
			o.RawFile = b.paths[c]
		}
	default:
		if b.hostFiles[dev] { // a file node at the root
			o.RawFile = b.paths[dev]
			o.FileNode = root["driver"] == "file"
		}
	}
	if root["driver"] == "qcow2" {
		o.Image = imageOf(dev)
	}
	if root["driver"] == "nbd" {
		o.Protocol = "nbd" // an export at the root: its format is the driver's
	}
	// A vmdk or vpc root (named or probed) is the image its commands see.
	o.VMDK, _ = dev.(*vmdk.Disk)
	o.VHD, _ = dev.(*vhd.Disk)
	o.LUKS, _ = dev.(*luksdisk.Disk)
	o.close = func() error {
		var errs []error
		for _, f := range b.beforeClose {
			errs = append(errs, f())
		}
		errs = append(errs, dev.Close())
		return errors.Join(errs...)
	}
	return o, nil
}

// builder opens the nodes of one spec.
type builder struct {
	def         Spec
	beforeClose []func() error
	// parentRO is the read-only setting of the qcow2 node whose children
	// are being built: a child's read-only defaults to it (leaf), as QEMU
	// passes read-only down to a node's children.
	parentRO bool
	// parentWritable: the format node whose file child is being built
	// opens writable, so that child may not be read-only (QEMU: "Block
	// node is read-only"; its writes would all fail).
	parentWritable bool
	// parentCache is the cache mode of that qcow2 node ("": none), which
	// its children take unless they set their own (QEMU passes
	// cache.direct and cache.no-flush down too).
	parentCache string
	// unlocked are the devices a file node opened with locking=off: a
	// qcow2 node over one takes no locks either.
	unlocked map[block.Device]bool
	// paths are the host files the devices stand for: those file nodes
	// opened, and the raw and throttle nodes over them (QEMU's
	// bdrv_dirname looks through a node's file child). A qcow2 node over
	// one resolves a relative backing file name against its directory.
	paths map[block.Device]string
	// hostFiles are the devices openFile opened: host files themselves,
	// not nodes over them (Opened.RawFile).
	hostFiles map[block.Device]bool
	// noDir names the driver of each device that has no directory
	// (quorum, blkverify, and the nodes over them): a qcow2 node over
	// one refuses a relative backing file name as QEMU does
	// (qcow2.Options.NoBaseDir), where it would take the working
	// directory's file.
	noDir map[block.Device]string
	// mirrors are the spec's mirror nodes, made paused: started when the
	// whole spec opened; created are the target files they created, to
	// remove when it did not.
	mirrors []*filter.Mirror
	created []string
	// probedRaw is the host file of the root when its format was probed
	// as raw (Opened.ProbedRaw).
	probedRaw string
	// throttles collects the spec's throttle nodes, and its json:
	// backing files' (Opened.ReleaseThrottles).
	throttles *throttleSet
	// nodeNames are the node-name values seen (genericKeys).
	nodeNames map[string]bool
}

// setPath records that dev stands for the host file p ("" records
// nothing).
func (b *builder) setPath(dev block.Device, p string) {
	if p == "" || dev == nil {
		return
	}
	if b.paths == nil {
		b.paths = map[block.Device]string{}
	}
	b.paths[dev] = p
}

// inheritDir gives dev its child's directory, or its lack of one: QEMU's
// bdrv_dirname looks through a node to its file child.
func (b *builder) inheritDir(dev, child block.Device) {
	b.setPath(dev, b.paths[child])
	if d := b.noDir[child]; d != "" {
		b.setNoDir(dev, d)
	}
}

// setNoDir records that dev, a node of the driver drv, has no directory.
func (b *builder) setNoDir(dev block.Device, drv string) {
	if b.noDir == nil {
		b.noDir = map[block.Device]string{}
	}
	b.noDir[dev] = drv
}

// noBaseDir is QEMU's refusal of a relative backing file name in an image
// stored in a node with no directory (bdrv_dirname).
func noBaseDir(drv string) error {
	return fmt.Errorf("Cannot generate a base directory for %s nodes", drv)
}

// drivers is the driver table: the open function of each driver name. A
// driver reads its keys from the node (build reports the keys it left
// unread) and returns the node's device, which closes everything the
// driver opened. init fills it: the drivers call build, which reads it.
//
// Drivers and their keys (unknown keys are an error; every node also
// takes QEMU's generic node-name, discard, detect-zeroes and
// auto-read-only, and file nodes aio-max-batch, drop-cache and
// x-check-cache-dropped: checked, then ignored, generic.go):
//
//	file         filename (or file); cache, aio, read-only; locking
//	             (on, off, auto: image locks as Open takes them for a raw
//	             image, or none)
//	qcow2        file; read-only; every qcow2 open option (l2-cache-size,
//	             prealloc, ...); backing=null (ignore the backing file),
//	             or the header's backing file's options: its key and
//	             its own backing file's (backingopts.go)
//	raw          file; offset, size (a fixed window; see filter.Raw):
//	             within the file, size a multiple of 512 (checkWindow)
//	blkverify    test, raw
//	             (it and quorum have no directory: a qcow2 node over
//	             them refuses a relative backing file name, as QEMU's
//	             bdrv_dirname; the other nodes look through to their
//	             file's)
//	quorum       children, vote-threshold (default: majority),
//	             rewrite-corrupted (bool). A child that cannot be opened is
//	             kept as a failed child (reported and skipped) as long as
//	             vote-threshold children opened.
//	copy-on-read file (a qcow2 node: it must report allocation); source
//	             (optional; default: read through the top's backing file)
//	mirror       file (source), target (a file name, created raw if missing
//	             and locked as a writable raw image, or a node),
//	             granularity, wait (default on: closing waits for the
//	             copy to converge first)
//	vmdk, vpc    file; read-only; backing=null (vmdk: without its
//	             parent); vpc's force_size_calc (chs, current_size);
//	             driver_format.go
//	throttle     file; iops-total, iops-read, iops-write, bps-total,
//	             bps-read, bps-write (also as limits.*), burst (seconds)
var drivers map[string]func(*builder, *node) (block.Device, error)

func init() {
	drivers = map[string]func(*builder, *node) (block.Device, error){
		"file": (*builder).file, "host_device": (*builder).file,
		"qcow2": (*builder).qcow2, "raw": (*builder).raw,
		"blkverify": (*builder).blkverify, "quorum": (*builder).quorum, "mirror": (*builder).mirror,
		"copy-on-read": (*builder).cor, "throttle": (*builder).throttle,
		"vmdk": (*builder).vmdk, "vpc": (*builder).vpc, "luks": (*builder).luks,
		"nbd": (*builder).nbd,
	}
}

// build opens one node: a string is a file whose format is probed.
func (b *builder) build(v any, path string) (block.Device, error) {
	var m map[string]any
	switch v := v.(type) {
	case block.Device:
		return v, nil // a node built already (probed over: probeNode)
	case string:
		m = map[string]any{"driver": "", "file": v}
	case map[string]any:
		m = v
	default:
		return nil, fmt.Errorf("image spec: %s: expected a node or a file name, got %T", path, v)
	}
	n := newNode(m, path)
	drv, err := n.str("driver", "")
	if err != nil {
		return nil, err
	}
	if _, set := m["driver"]; !set && n.has("filename") && path != "" {
		// A child node with a filename and no driver is a host file,
		// as in QEMU (file.filename=x means file.driver=file). At the
		// root QEMU refuses it ("Must specify either driver or file",
		// below): opened as raw, a qcow2 file's header was overwritten
		// by the first write.
		drv = "file"
	}
	// prebuilt is the node under this one when it was built to probe
	// its bytes (an NBD export): closed here if this node fails before
	// its driver takes it.
	var prebuilt block.Device
	closePrebuilt := func() {
		if prebuilt != nil {
			prebuilt.Close()
		}
	}
	if drv == "" {
		// No driver: probe the format of the host file under it, as
		// qemu-img does (a bare file name, or a file node).
		var f string
		switch fv := m["file"].(type) {
		case nil:
			return nil, &ValueError{Msg: "Must specify either driver or file"}
		case string:
			f = fv
		case map[string]any:
			if d, set := fv["driver"]; !set || d == "file" {
				if f, _ = fv["filename"].(string); f == "" {
					return nil, errNoFileName
				}
			}
		}
		if f == "" {
			fv, _ := m["file"].(map[string]any)
			if fv["driver"] != "nbd" {
				return nil, fmt.Errorf("image spec: %s: the format of a node over another driver than file is not probed: name it (driver=)", path)
			}
			// An NBD export: its bytes are probed as a file's are.
			dev, pdrv, err := b.probeNode(fv, n.name("file"))
			if err != nil {
				return nil, err
			}
			m["file"], prebuilt, f = dev, dev, nbdNodeName("", fv) // f: QEMU's name of the node probed
			drv = pdrv
		}
		if prebuilt == nil {
			if err := checkFileType(f); err != nil {
				return nil, err
			}
			if drv, err = qcow2.Probe(f); err != nil {
				return nil, err
			}
		}
		if drv != "qcow2" && drv != "raw" && drv != "vpc" && drv != "vmdk" && drv != "luks" {
			if prebuilt != nil {
				prebuilt.Close()
				return nil, &qcow2.FormatError{Format: drv, Probed: true}
			}
			return nil, fmt.Errorf("%s: %w", f, &qcow2.FormatError{Format: drv, Probed: true})
		}
		n.m["driver"], n.used["driver"] = drv, true // the root's format, for Opened.Image
		if path == "" && drv == "raw" {
			b.probedRaw = f
		}
	}
	open, ok := drivers[drv]
	if !ok {
		closePrebuilt()
		if !QemuDriver(drv) {
			return nil, &DriverError{Name: drv} // QEMU's "Unknown driver" too
		}
		return nil, fmt.Errorf("image spec: %s: driver %q is not supported by qring (file, qcow2, raw, vmdk, vpc, luks, blkverify, quorum, copy-on-read, mirror, throttle, nbd)", path, drv)
	}
	if err := b.genericKeys(n, drv); err != nil {
		closePrebuilt()
		return nil, err
	}
	dev, err := open(b, n)
	if err != nil {
		return nil, err
	}
	if err := n.done(); err != nil {
		dev.Close()
		return nil, err
	}
	return dev, nil
}

// child builds the node under key k.
func (b *builder) child(n *node, k string) (block.Device, error) {
	v, err := n.need(k)
	if err != nil {
		return nil, err
	}
	return b.build(v, n.name(k))
}

// leaf reads the per-leaf settings (cache, aio, read-only) over defaults
// (read-only and cache: the spec's, or the parent qcow2 node's).
func (b *builder) leaf(n *node) (cache, aio string, ro bool, err error) {
	def := b.def.Cache
	if b.parentCache != "" {
		def = b.parentCache
	}
	if cache, err = cacheOf(n, def, fmt.Sprint(n.m["driver"]), n.m["driver"] == "file"); err != nil {
		return
	}
	if aio, err = n.str("aio", b.def.AIO); err != nil {
		return
	}
	ro, err = n.boolean("read-only", b.def.ReadOnly || b.parentRO)
	if err == nil && ro && b.parentWritable {
		err = &ValueError{Msg: "Block node is read-only"}
	}
	return
}

// lockThrough takes format's locks on the host file under dev, when dev
// is that file (a file node with options of its own) or raw and throttle
// nodes over it: QEMU's raw driver and filters pass their parent's
// permissions down to the file, so a qcow2 node over a raw node
// unshares writes there as over the file itself. openFile locked the
// file as a raw image, which shares writes: another process could write
// the image this one reads or writes (a qcow2 image read by qimg
// convert while qemu-nbd wrote it). A file opened with locking=off
// takes none.
func (b *builder) lockThrough(dev block.Device, format string, readOnly, forceShare bool) error {
	d := dev
	for {
		switch r := d.(type) {
		case *filter.Raw:
			d = r.Unwrap()
			continue
		case *filter.Throttle:
			d = r.Unwrap()
			continue
		}
		break
	}
	if !b.hostFiles[d] || b.unlocked[d] {
		return nil
	}
	o := b.def.Opts
	o.ForceShare = forceShare
	return lockFormatFile(d, b.paths[d], format, readOnly, o)
}

// openFile opens a host file with n's leaf settings (cache, aio,
// read-only) and takes its image locks as Open does for a raw image
// (openRaw), unless the defaults' Opts.NoLock or noLock (locking=off)
// says not to.
func (b *builder) openFile(name string, n *node, noLock bool) (block.Device, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	op, err := Opener(cache, aio)
	if err != nil {
		return nil, err
	}
	o := b.def.Opts
	o.NoLock = o.NoLock || noLock
	d, err := openRaw(name, op, ro, o, b.def.UnshareResize)
	if err == nil {
		b.setPath(d, name)
		if b.hostFiles == nil {
			b.hostFiles = map[block.Device]bool{}
		}
		b.hostFiles[d] = true
	}
	return d, err
}

// probeNode builds the node v (an NBD export) and probes the format of
// its bytes as qemu-img probes a file's: an empty one is raw.
func (b *builder) probeNode(v map[string]any, path string) (block.Device, string, error) {
	dev, err := b.build(v, path)
	if err != nil {
		return nil, "", err
	}
	size, err := dev.Size()
	if err != nil {
		dev.Close()
		return nil, "", err
	}
	if size == 0 {
		return dev, "raw", nil
	}
	head := make([]byte, min(size, int64(format.ProbeLen)))
	if err := block.ReadAt(dev, head, 0); err != nil {
		dev.Close()
		return nil, "", err
	}
	name, _ := v["filename"].(string)
	return dev, format.Probe(head, name), nil
}
