package imgopen

import (
	"encoding/json"
	"sort"
	"strings"
)

// QEMU names an image whose options matter (a raw window, a LUKS
// volume's key, a qcow2 image's encrypt.key-secret) by the JSON of its
// "full open options" (bdrv_refresh_filename): each node's driver, the
// options its driver calls strong, and its file child, written by
// qobject_to_json ({"k": v, ...}) in the order of its QDict's hash
// buckets.

// qemuJSONName is that name for the spec root, or "" where the spec has
// a node this does not know how to name.
func qemuJSONName(root map[string]any) string {
	var b strings.Builder
	if !writeFullOptions(&b, root) {
		return ""
	}
	return "json:" + b.String()
}

// strongOptions are the options each driver keeps in the name.
var strongOptions = map[string][]string{
	"raw":   {"offset", "size"},
	"luks":  {"key-secret"},
	"qcow2": {"encrypt.key-secret"},
}

func writeFullOptions(b *strings.Builder, v any) bool {
	var m map[string]any
	switch v := v.(type) {
	case string:
		m = map[string]any{"driver": "file", "filename": v}
	case map[string]any:
		m = v
	default:
		return false
	}
	drv, _ := m["driver"].(string)
	if _, set := m["driver"]; !set {
		if _, ok := m["filename"]; !ok {
			return false
		}
		drv = "file"
	}
	for k, v := range m {
		// Another child (a backing or data file node, a file node's
		// own child): not named here.
		if _, isNode := v.(map[string]any); isNode && k != "file" && k != "cache" && k != "encrypt" {
			return false
		}
		if k == "backing" && v != nil && v != "" {
			return false
		}
	}
	out := map[string]any{"driver": drv}
	switch drv {
	case "file":
		fn, ok := m["filename"].(string)
		if _, child := m["file"]; !ok || child {
			return false
		}
		out["filename"] = fn
	case "raw", "luks", "qcow2":
		for _, k := range strongOptions[drv] {
			if v, ok := flatGet(m, k); ok {
				out[k] = v
			}
		}
		f, ok := m["file"]
		if !ok {
			return false
		}
		out["file"] = f
	default:
		return false
	}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return qdictBucket(keys[i]) < qdictBucket(keys[j]) })
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteString(": ")
		if k == "file" {
			if !writeFullOptions(b, out[k]) {
				return false
			}
			continue
		}
		vb, err := json.Marshal(out[k])
		if err != nil {
			return false
		}
		b.Write(vb)
	}
	b.WriteString("}")
	return true
}

// flatGet is key k ("encrypt.key-secret") of m, dotted or nested.
func flatGet(m map[string]any, k string) (any, bool) {
	if v, ok := m[k]; ok {
		return v, true
	}
	head, rest, ok := strings.Cut(k, ".")
	if !ok {
		return nil, false
	}
	sub, ok := m[head].(map[string]any)
	if !ok {
		return nil, false
	}
	return flatGet(sub, rest)
}

// qdictBucket is the hash bucket QEMU's QDict keeps key k in (qdict.c:
// tdb_hash modulo QDICT_BUCKET_MAX); iteration goes bucket by bucket.
func qdictBucket(k string) uint32 {
	value := uint32(0x238F13AF) * uint32(len(k))
	for i := 0; i < len(k); i++ {
		value += uint32(k[i]) << (uint32(i) * 5 % 24)
	}
	return (1103515243*value + 12345) % 512
}
