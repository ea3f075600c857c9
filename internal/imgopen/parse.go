package imgopen

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/qring/qring/qcow2"
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
// is probed (qcow2 or raw; a file QEMU would probe as another format is a
// *qcow2.FormatError); the "file" of qcow2/raw may be a file name or a
// node. The drivers and their keys are listed with the driver table,
// drivers (build.go).
//
// Booleans are on/off/true/false; sizes take k/M/G suffixes.

// IsSpec reports whether a CLI's FILE argument is a stack spec rather than
// a file name: it starts with "json:", or with "driver=" and names no
// existing file (QEMU's tools take it for a file name without
// --image-opts, and a file of that name is the one meant).
func IsSpec(s string) bool {
	if strings.HasPrefix(s, "json:") {
		return true
	}
	if !strings.HasPrefix(s, "driver=") {
		return false
	}
	_, err := os.Lstat(s)
	return err != nil
}

// ParseSpec parses a "json:{...}" spec or a key=value spec into a tree of
// map[string]any nodes (values: string, bool, json.Number, []any, nil).
func ParseSpec(spec string) (map[string]any, error) {
	root, err := parseSpec(spec, false)
	if err != nil {
		return nil, err
	}
	if _, ok := root["driver"]; !ok {
		return nil, errors.New("image spec: no driver= key")
	}
	return root, nil
}

// parseSpec is ParseSpec without its demand for a driver; lastWins takes
// a key=value string's repeated key at its last value, as QEMU's
// --image-opts does (qemu_opts_to_qdict), where a stack spec refuses it.
func parseSpec(spec string, lastWins bool) (map[string]any, error) {
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
		if err := noDuplicateKeys(js); err != nil {
			return nil, err
		}
		return crumple(m)
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
				if _, dup := m[p].(map[string]any); dup {
					return nil, fmt.Errorf("image spec: key %q is both a value and a node", kv[0])
				}
				if _, dup := m[p]; dup && !lastWins {
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
	return root, nil
}

// crumple turns a JSON spec's dotted keys ("file.filename": "x") into the
// nodes they name, in m and every node below it, as QEMU reads a json:
// spec (it flattens the tree, so nested and dotted keys mean the same;
// both may name one node). A key that is both a value and a node is
// refused.
func crumple(m map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			var err error
			if v, err = crumple(sub); err != nil {
				return nil, err
			}
		}
		parts := strings.Split(k, ".")
		if slices.Contains(parts, "") {
			return nil, fmt.Errorf("image spec: bad key %q", k)
		}
		node := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := node[p].(map[string]any)
			if !ok {
				if _, exists := node[p]; exists {
					return nil, fmt.Errorf("image spec: key %q is both a value and a node", k)
				}
				next = map[string]any{}
				node[p] = next
			}
			node = next
		}
		last := parts[len(parts)-1]
		old, exists := node[last]
		if !exists {
			node[last] = v
			continue
		}
		if err := mergeNode(old, v, k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// mergeNode merges node v into node old, both under key k (one node
// written nested and dotted, at any depth); a key both give is refused.
func mergeNode(old, v any, k string) error {
	om, ok1 := old.(map[string]any)
	vm, ok2 := v.(map[string]any)
	if !ok1 || !ok2 {
		return fmt.Errorf("image spec: key %q is both a value and a node, or given twice", k)
	}
	for kk, vv := range vm {
		ov, dup := om[kk]
		if !dup {
			om[kk] = vv
			continue
		}
		if err := mergeNode(ov, vv, k+"."+kk); err != nil {
			return err
		}
	}
	return nil
}

// noDuplicateKeys refuses a JSON text (already decoded without error)
// with a key twice in one object, as QEMU's parser does ("duplicate
// key"); Go's decoder keeps the last value, and a spec could then mean
// two things.
func noDuplicateKeys(js string) error {
	d := json.NewDecoder(strings.NewReader(js))
	var walk func() error
	walk = func() error {
		t, err := d.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'):
			seen := map[string]bool{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return err
				}
				ks, _ := k.(string)
				if seen[ks] {
					return fmt.Errorf("image spec: JSON parse error, duplicate key %q", ks)
				}
				seen[ks] = true
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = d.Token()
			return err
		case json.Delim('['):
			for d.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = d.Token()
			return err
		}
		return nil
	}
	return walk()
}

// SpecFilename is the file name QEMU gives a node opened from a json:
// spec (its bdrv_refresh_filename): for a qcow2 or raw node over a plain
// file node, that file's name as the spec writes it, whatever runtime
// options either node sets that do not change what the node reads
// (aio, cache, locking, l2-cache-size, read-only, ...: QEMU leaves out
// all but a driver's "strong" options); for any other spec (or a name
// that is not a json: spec), name itself. qemu-img info and map print it
// for a json: backing file.
func SpecFilename(name string) string {
	if !strings.HasPrefix(name, "json:") {
		return name
	}
	root, err := parseSpec(name, false)
	if err != nil {
		return name
	}
	if f := specFilename(name, root); f != name {
		return f
	}
	if q := qemuJSONName(root); q != "" {
		return q // QEMU's own json: name of the spec (qemuname.go)
	}
	return name
}

// specFilename is SpecFilename's plain file name, or name.
func specFilename(name string, root map[string]any) string {
	d, ok := root["driver"]
	if d == "nbd" {
		return nbdNodeName(name, root)
	}
	if d == "file" {
		// A file node at the root: QEMU names it by its file.
		fn, _ := root["filename"].(string)
		for k, v := range root {
			if _, isNode := v.(map[string]any); isNode && k != "cache" {
				return name
			}
		}
		if fn == "" {
			return name
		}
		return fn
	}
	if ok && d != "qcow2" && d != "raw" && d != "vmdk" && d != "vpc" && d != "luks" { // none: the backing format's
		return name
	}
	for k, v := range root {
		if k == "driver" || k == "file" {
			continue
		}
		// Strong: a raw window, vpc's size calculation, children other
		// than the file (backing=null is none), the key (qcow2's
		// encrypt, luks's key-secret).
		if (d == "raw" && (k == "offset" || k == "size")) || (d == "vpc" && k == "force_size_calc") || (d == "luks" && k == "key-secret") ||
			k == "backing" && v != nil && v != "" || k == "data-file" || k == "encrypt" || k == "extents" {
			return name
		}
	}
	switch f := root["file"].(type) {
	case string:
		return f
	case map[string]any:
		if f["driver"] == "nbd" {
			return nbdNodeName(name, f)
		}
		fn, _ := f["filename"].(string)
		if d, set := f["driver"]; fn == "" || set && d != "file" {
			return name
		}
		for k, v := range f {
			if _, isNode := v.(map[string]any); isNode && k != "cache" {
				return name // a child node: not a plain file node
			}
		}
		return fn
	}
	return name
}

// SpecLeafFile is the host file a json: spec's data lives in when its
// nodes are a chain of file children (qcow2, raw, a raw window, throttle,
// ...) ending in a plain file node: that node's filename; "" for any
// other spec or name. qemu-img map names it in its File column, and info
// measures its disk size.
func SpecLeafFile(name string) string {
	if !strings.HasPrefix(name, "json:") {
		return ""
	}
	root, err := parseSpec(name, false)
	if err != nil {
		return ""
	}
	var v any = root
	for depth := 0; depth < 64; depth++ {
		switch n := v.(type) {
		case string:
			return n
		case map[string]any:
			d, set := n["driver"]
			if fn, ok := n["filename"].(string); ok && (!set || d == "file") {
				return fn
			}
			if d == "quorum" || d == "blkverify" || d == "mirror" {
				return ""
			}
			v = n["file"]
		default:
			return ""
		}
	}
	return ""
}
