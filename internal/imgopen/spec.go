package imgopen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Stack specs: a tree of block drivers, written without Go, in either of
// QEMU's two syntaxes (see IsSpec and ParseSpec):
//
//	json:{"driver":"blkverify","test":{"driver":"qcow2","file":"t.qcow2"},"raw":{"driver":"raw","file":"s.raw"}}
//	driver=quorum,children=a.qcow2:b.qcow2:c.qcow2,vote-threshold=2
//	driver=throttle,iops-total=150,file.driver=qcow2,file.file=t.qcow2
//
// In the key=value form, dotted keys build nested nodes (file.driver=...),
// numeric components build lists (children.0.file=a.qcow2), ",," escapes a
// comma, and a list of plain files may be written colon-separated
// (children=a:b:c). A child given as a string is a file name whose format
// is probed (qcow2 or raw); the "file" of qcow2/raw may be a file name or a
// node.
//
// Drivers and their keys (unknown keys are an error):
//
//	file         filename (or file); cache, aio, read-only
//	qcow2        file; read-only; every qcow2 open option (l2-cache-size,
//	             prealloc, ...); backing=null (ignore the backing file)
//	raw          file; offset, size (a fixed window; see filter.Raw)
//	blkverify    test, raw
//	quorum       children, vote-threshold (default: majority),
//	             rewrite-corrupted (bool). A child that cannot be opened is
//	             kept as a failed child (reported and skipped) as long as
//	             vote-threshold children opened.
//	copy-on-read file (a qcow2 node: it must report allocation); source
//	             (optional; default: read through the top's backing file)
//	mirror       file (source), target (a file name, created raw if
//	             missing, or a node), granularity, wait (default on: closing
//	             waits for the copy to converge first)
//	throttle     file; iops-total, iops-read, iops-write, bps-total,
//	             bps-read, bps-write (also as limits.*), burst (seconds)
//
// Booleans are on/off/true/false; sizes take k/M/G suffixes.

// IsSpec reports whether a CLI's FILE argument is a stack spec rather than
// a file name: it starts with "json:" or "driver=".
func IsSpec(s string) bool {
	return strings.HasPrefix(s, "json:") || strings.HasPrefix(s, "driver=")
}

// ParseSpec parses a "json:{...}" spec or a key=value spec into a tree of
// map[string]any nodes (values: string, bool, json.Number, []any, nil).
func ParseSpec(spec string) (map[string]any, error) {
	if js, ok := strings.CutPrefix(spec, "json:"); ok {
		d := json.NewDecoder(strings.NewReader(js))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			return nil, fmt.Errorf("image spec: %w", err)
		}
		if d.More() {
			return nil, errors.New("image spec: trailing data after the JSON object")
		}
		return m, nil
	}
	kvs, err := qcow2.SplitOptions(spec)
	if err != nil {
		return nil, fmt.Errorf("image spec: %w", err)
	}
	root := map[string]any{}
	for _, kv := range kvs {
		parts := strings.Split(kv[0], ".")
		m := root
		for i, p := range parts {
			if p == "" {
				return nil, fmt.Errorf("image spec: bad key %q", kv[0])
			}
			if i == len(parts)-1 {
				if _, dup := m[p]; dup {
					return nil, fmt.Errorf("image spec: duplicate key %q", kv[0])
				}
				m[p] = kv[1]
				break
			}
			sub, ok := m[p].(map[string]any)
			if !ok {
				if _, exists := m[p]; exists {
					return nil, fmt.Errorf("image spec: key %q is both a value and a node", kv[0])
				}
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
	}
	if _, ok := root["driver"]; !ok {
		return nil, errors.New("image spec: no driver= key")
	}
	return root, nil
}

// AllocatedImage adapts a *qcow2.Image to filter.Allocator through
// BlockStatus: allocated means the top layer decides the contents (data or
// zero clusters), so copy-on-read leaves it alone.
type AllocatedImage struct{ *qcow2.Image }

var _ filter.AllocatorDevice = AllocatedImage{}

// Allocated implements filter.Allocator.
func (a AllocatedImage) Allocated(off, n int64) (bool, int64, error) {
	st, err := a.BlockStatus(off, n)
	if err != nil {
		return false, 0, err
	}
	return st.Allocated, st.Len, nil
}

// closerFunc adapts a function to io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// OpenSpec opens the driver tree spec describes (IsSpec syntax). defaults
// supplies what the spec leaves out: cache mode, AIO, read-only and qcow2
// engine options for every leaf (Path and Format are ignored).
//
// It returns the top device, the top *qcow2.Image when the root driver is
// qcow2 (else nil: metrics and qcow2-only commands then see the stack as a
// plain device), and the closer to use instead of dev.Close: it first lets
// mirrors with wait=on converge, then closes the whole tree (every layer
// closes its children).
func OpenSpec(spec string, defaults Spec) (block.Device, *qcow2.Image, io.Closer, error) {
	root, err := ParseSpec(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	b := &builder{def: defaults}
	dev, im, err := b.build(root, "")
	if err != nil {
		return nil, nil, nil, err
	}
	if root["driver"] != "qcow2" {
		im = nil
	}
	closer := closerFunc(func() error {
		var errs []error
		for _, f := range b.beforeClose {
			errs = append(errs, f())
		}
		errs = append(errs, dev.Close())
		return errors.Join(errs...)
	})
	return dev, im, closer, nil
}

type builder struct {
	def         Spec
	beforeClose []func() error
}

// node is one driver's options with use tracking, so a typo is an error.
type node struct {
	m    map[string]any
	used map[string]bool
	path string // for messages: "children.1.file"
}

func (n *node) has(k string) bool { _, ok := n.m[k]; return ok }

func (n *node) get(k string) (any, bool) {
	v, ok := n.m[k]
	if ok {
		n.used[k] = true
	}
	return v, ok
}

func (n *node) name(k string) string {
	if n.path == "" {
		return k
	}
	return n.path + "." + k
}

func (n *node) str(k, def string) (string, error) {
	v, ok := n.get(k)
	if !ok {
		return def, nil
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", fmt.Errorf("%s: expected a string, got %T", n.name(k), v)
}

func (n *node) boolean(k string, def bool) (bool, error) {
	v, ok := n.get(k)
	if !ok {
		return def, nil
	}
	if b, ok := v.(bool); ok {
		return b, nil
	}
	s, err := n.str(k, "")
	if err != nil {
		return false, err
	}
	switch s {
	case "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: invalid boolean %q (on, off)", n.name(k), s)
}

func (n *node) size(k string) (int64, error) {
	s, err := n.str(k, "")
	if err != nil || s == "" {
		return 0, err
	}
	v, err := qcow2.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", n.name(k), err)
	}
	return v, nil
}

func (n *node) float(k string) (float64, error) {
	s, err := n.str(k, "")
	if err != nil || s == "" {
		return 0, err
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s: invalid number %q", n.name(k), s)
	}
	return v, nil
}

// done reports keys nobody consumed.
func (n *node) done() error {
	var extra []string
	for k := range n.m {
		if !n.used[k] {
			extra = append(extra, n.name(k))
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("image spec: unknown option(s) %s for driver %v", strings.Join(extra, ", "), n.m["driver"])
	}
	return nil
}

// list returns k as a list: a JSON array, a node with keys 0..n-1, or a
// colon-separated string of file names.
func (n *node) list(k string) ([]any, error) {
	v, ok := n.get(k)
	if !ok {
		return nil, fmt.Errorf("%s: missing", n.name(k))
	}
	switch v := v.(type) {
	case []any:
		return v, nil
	case string:
		var out []any
		for _, p := range strings.Split(v, ":") {
			out = append(out, p)
		}
		return out, nil
	case map[string]any:
		out := make([]any, len(v))
		for i := range out {
			e, ok := v[strconv.Itoa(i)]
			if !ok {
				return nil, fmt.Errorf("%s: list element %d missing", n.name(k), i)
			}
			out[i] = e
		}
		if len(v) != len(out) {
			return nil, fmt.Errorf("%s: list keys must be 0..%d", n.name(k), len(out)-1)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: expected a list, got %T", n.name(k), v)
}

// build opens one node: a string is a file whose format is probed.
func (b *builder) build(v any, path string) (block.Device, *qcow2.Image, error) {
	var m map[string]any
	switch v := v.(type) {
	case string:
		m = map[string]any{"driver": "", "file": v}
	case map[string]any:
		m = v
	default:
		return nil, nil, fmt.Errorf("image spec: %s: expected a node or a file name, got %T", path, v)
	}
	n := &node{m: m, used: map[string]bool{}, path: path}
	drv, err := n.str("driver", "")
	if err != nil {
		return nil, nil, err
	}
	if drv == "" {
		// A bare file: probe its format, as qemu-img does.
		f, err := n.str("file", "")
		if err != nil {
			return nil, nil, err
		}
		if f == "" {
			return nil, nil, fmt.Errorf("image spec: %s: no driver", path)
		}
		if drv, err = qcow2.Probe(f); err != nil {
			return nil, nil, err
		}
	}
	var dev block.Device
	var im *qcow2.Image
	switch drv {
	case "file", "host_device":
		dev, err = b.file(n)
	case "qcow2":
		dev, im, err = b.qcow2(n)
	case "raw":
		dev, err = b.raw(n)
	case "blkverify":
		dev, err = b.blkverify(n)
	case "quorum":
		dev, err = b.quorum(n)
	case "copy-on-read":
		dev, err = b.cor(n)
	case "mirror":
		dev, err = b.mirror(n)
	case "throttle":
		dev, err = b.throttle(n)
	default:
		err = fmt.Errorf("image spec: %s: unknown driver %q (file, qcow2, raw, blkverify, quorum, copy-on-read, mirror, throttle)", path, drv)
	}
	if err == nil {
		if err = n.done(); err != nil {
			dev.Close()
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return dev, im, nil
}

// leaf reads the per-leaf settings (cache, aio, read-only) over defaults.
func (b *builder) leaf(n *node) (cache, aio string, ro bool, err error) {
	if cache, err = n.str("cache", b.def.Cache); err != nil {
		return
	}
	if aio, err = n.str("aio", b.def.AIO); err != nil {
		return
	}
	ro, err = n.boolean("read-only", b.def.ReadOnly)
	return
}

// fileName returns the file name of a "file" that is a string or a
// {"driver":"file","filename":...} node without other options; "" if it is
// some other node.
func fileName(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		f, _ := v["filename"].(string)
		if v["driver"] == "file" && f != "" && len(v) == 2 {
			return f
		}
	}
	return ""
}

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
		return nil, fmt.Errorf("image spec: %s: no filename", n.path)
	}
	return b.openFile(name, n)
}

// openFile opens a file with n's leaf settings (cache, aio, read-only).
func (b *builder) openFile(name string, n *node) (block.Device, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	op, err := Opener(cache, aio)
	if err != nil {
		return nil, err
	}
	return op(name, ro)
}

// child builds the node under key k.
func (b *builder) child(n *node, k string) (block.Device, *qcow2.Image, error) {
	v, ok := n.get(k)
	if !ok {
		return nil, nil, fmt.Errorf("image spec: %s: missing", n.name(k))
	}
	return b.build(v, n.name(k))
}

// imageDev is a qcow2 image opened on a device it must close too
// (qcow2.OpenDevice leaves the device open).
type imageDev struct {
	*qcow2.Image
	dev block.Device
}

func (d imageDev) Close() error { return errors.Join(d.Image.Close(), d.dev.Close()) }

func (b *builder) qcow2(n *node) (block.Device, *qcow2.Image, error) {
	cache, aio, ro, err := b.leaf(n)
	if err != nil {
		return nil, nil, err
	}
	o := b.def.Opts
	o.ReadOnly = o.ReadOnly || ro
	for _, k := range qcow2.OptionNames {
		if k == "read-only" || !n.has(k) {
			continue
		}
		s, err := n.str(k, "")
		if err != nil {
			return nil, nil, err
		}
		if err := o.Set(k, s); err != nil {
			return nil, nil, fmt.Errorf("image spec: %s: %w", n.name(k), err)
		}
	}
	if v, ok := n.get("backing"); ok {
		if v != nil && v != "null" && v != "" {
			return nil, nil, fmt.Errorf("image spec: %s: only backing=null is supported", n.name("backing"))
		}
		o.NoBacking = true
	}
	if o.Opener, err = Opener(cache, aio); err != nil {
		return nil, nil, err
	}
	fv, ok := n.get("file")
	if !ok {
		return nil, nil, fmt.Errorf("image spec: %s: missing", n.name("file"))
	}
	if name := fileName(fv); name != "" {
		if _, err := os.Stat(name); err != nil {
			return nil, nil, err
		}
		im, err := qcow2.Open(name, o)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return im, im, nil
	}
	// The image lives on a stack (throttle, raw window, ...).
	dev, _, err := b.build(fv, n.name("file"))
	if err != nil {
		return nil, nil, err
	}
	im, err := qcow2.OpenDevice(dev, o)
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	return imageDev{im, dev}, im, nil
}

func (b *builder) raw(n *node) (block.Device, error) {
	var o filter.RawOptions
	var err error
	if o.Offset, err = n.size("offset"); err != nil {
		return nil, err
	}
	if o.Size, err = n.size("size"); err != nil {
		return nil, err
	}
	fv, ok := n.get("file")
	if !ok {
		return nil, fmt.Errorf("image spec: %s: missing", n.name("file"))
	}
	var child block.Device
	if name := fileName(fv); name != "" {
		child, err = b.openFile(name, n)
	} else {
		child, _, err = b.build(fv, n.name("file"))
	}
	if err != nil {
		return nil, err
	}
	r, err := filter.NewRaw(child, o)
	if err != nil {
		child.Close()
		return nil, err
	}
	return r, nil
}

func (b *builder) blkverify(n *node) (block.Device, error) {
	test, _, err := b.child(n, "test")
	if err != nil {
		return nil, err
	}
	ref, _, err := b.child(n, "raw")
	if err != nil {
		test.Close()
		return nil, err
	}
	return filter.NewBlkverify(test, ref), nil
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
		d, _, err := b.build(k, fmt.Sprintf("%s.%d", n.name("children"), i))
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
	return q, nil
}

func (b *builder) cor(n *node) (block.Device, error) {
	top, im, err := b.child(n, "file")
	if err != nil {
		return nil, err
	}
	if im == nil {
		top.Close()
		return nil, fmt.Errorf("image spec: %s: copy-on-read needs a qcow2 top image", n.path)
	}
	ad := filter.AllocatorDevice(AllocatedImage{im})
	if id, ok := top.(imageDev); ok {
		ad = allocImageDev{AllocatedImage{im}, id}
	}
	var src block.Device
	if n.has("source") {
		if src, _, err = b.child(n, "source"); err != nil {
			top.Close()
			return nil, err
		}
	}
	return filter.NewCopyOnRead(ad, src), nil
}

// allocImageDev is an AllocatedImage that also closes the image's device.
type allocImageDev struct {
	AllocatedImage
	id imageDev
}

func (a allocImageDev) Close() error { return a.id.Close() }

func (b *builder) mirror(n *node) (block.Device, error) {
	var mo filter.MirrorOptions
	var err error
	if mo.Granularity, err = n.size("granularity"); err != nil {
		return nil, err
	}
	wait, err := n.boolean("wait", true)
	if err != nil {
		return nil, err
	}
	tv, ok := n.get("target")
	if !ok {
		return nil, fmt.Errorf("image spec: %s: missing", n.name("target"))
	}
	src, _, err := b.child(n, "file")
	if err != nil {
		return nil, err
	}
	var tgt block.Device
	if name, ok := tv.(string); ok {
		// A target file name is a raw file, created if missing (QEMU's
		// drive-mirror mode=absolute-paths with format=raw).
		fo, ferr := FileOptions(b.def.Cache, b.def.AIO, false)
		if ferr == nil {
			fo.Create = true
			tgt, err = uring.Open(name, fo)
		} else {
			err = ferr
		}
	} else {
		tgt, _, err = b.build(tv, n.name("target"))
	}
	if err != nil {
		src.Close()
		return nil, err
	}
	m, err := filter.NewMirror(src, tgt, mo)
	if err != nil {
		src.Close()
		tgt.Close()
		return nil, err
	}
	if wait {
		b.beforeClose = append(b.beforeClose, m.Wait)
	}
	return m, nil
}

func (b *builder) throttle(n *node) (block.Device, error) {
	var l filter.ThrottleLimits
	lim := n
	if v, ok := n.get("limits"); ok {
		lm, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("image spec: %s: expected a node", n.name("limits"))
		}
		lim = &node{m: lm, used: map[string]bool{}, path: n.name("limits")}
	}
	for _, f := range []struct {
		k string
		p *float64
	}{
		{"iops-total", &l.IOPSTotal}, {"iops-read", &l.IOPSRead}, {"iops-write", &l.IOPSWrite},
		{"bps-total", &l.BPSTotal}, {"bps-read", &l.BPSRead}, {"bps-write", &l.BPSWrite},
	} {
		if strings.HasPrefix(f.k, "bps") {
			// Bandwidth may carry a size suffix (bps-total=100M).
			v, err := lim.size(f.k)
			if err != nil {
				return nil, err
			}
			*f.p = float64(v)
			continue
		}
		v, err := lim.float(f.k)
		if err != nil {
			return nil, err
		}
		*f.p = v
	}
	burst, err := lim.float("burst")
	if err != nil {
		return nil, err
	}
	l.Burst = time.Duration(burst * float64(time.Second))
	if lim != n {
		if err := lim.done(); err != nil {
			return nil, err
		}
	}
	child, _, err := b.child(n, "file")
	if err != nil {
		return nil, err
	}
	return filter.NewThrottle(child, l, nil), nil
}
