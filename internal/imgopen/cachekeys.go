package imgopen

import (
	"fmt"
	"sort"
)

// QEMU's cache options are two booleans, cache.direct (O_DIRECT) and
// cache.no-flush (flushes ignored), which a node takes as "cache" with
// keys direct and no-flush (ParseSpec makes the dotted keys a node); the
// cache modes of qemu-img's -t (Spec.Cache) stand for pairs of them.

// cacheDirectNoFlush is the mode with both set, which -t has no name for.
const cacheDirectNoFlush = "direct-no-flush"

// cacheOf reads node n's cache key over the mode def: a mode name (a qring
// spec's cache=none), or QEMU's cache.direct and cache.no-flush, which
// override def's halves. Another key under cache is refused as QEMU
// refuses it, naming the driver (protocol: a file node).
func cacheOf(n *node, def, driver string, protocol bool) (string, error) {
	v, ok := n.m["cache"]
	m, isNode := v.(map[string]any)
	if !ok || !isNode {
		return n.str("cache", def)
	}
	n.used["cache"] = true
	c := newNode(m, n.name("cache"))
	var direct, noFlush *bool
	for _, f := range []struct {
		k string
		p **bool
	}{{"direct", &direct}, {"no-flush", &noFlush}} {
		if !c.has(f.k) {
			continue
		}
		b, err := c.boolean(f.k, false)
		if err != nil {
			return "", &ValueError{Msg: fmt.Sprintf("Parameter 'cache.%s' expects 'on' or 'off'", f.k)}
		}
		*f.p = &b
	}
	var extra []string
	for k := range m {
		if k != "direct" && k != "no-flush" {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return "", &OptionError{Driver: driver, Option: "cache." + extra[0], Protocol: protocol}
	}
	return cacheMode(def, direct, noFlush), nil
}

// cacheMode is the mode def with cache.direct and cache.no-flush set as
// given (nil: as def has it). def's writethrough half stays: qemu-img
// applies it above the file.
func cacheMode(def string, direct, noFlush *bool) string {
	if direct == nil && noFlush == nil {
		return def
	}
	d := def == "none" || def == "directsync" || def == cacheDirectNoFlush
	nf := def == "unsafe" || def == cacheDirectNoFlush
	wt := def == "writethrough" || def == "directsync"
	if direct != nil {
		d = *direct
	}
	if noFlush != nil {
		nf = *noFlush
	}
	switch {
	case d && nf:
		return cacheDirectNoFlush
	case nf:
		return "unsafe"
	case d && wt:
		return "directsync"
	case d:
		return "none"
	case wt:
		return "writethrough"
	}
	return "writeback"
}

// fileIOKeys takes a file node's aio and cache keys out of v (an
// --image-opts file child: ImageOpts) into s.AIO and s.Cache, and returns
// the node without them (v itself when it is no node).
func fileIOKeys(v any, s *Spec) (any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return v, nil
	}
	_, hasAIO := m["aio"]
	_, hasCache := m["cache"]
	if !hasAIO && !hasCache {
		return v, nil
	}
	n := newNode(m, "file")
	if hasAIO {
		a, err := n.str("aio", "")
		if err != nil {
			return nil, err
		}
		switch a {
		case "threads", "io_uring", "native": // native: FileOptions says why not
		default:
			return nil, &ValueError{Msg: "invalid parameter value: " + a}
		}
		s.AIO = a
	}
	if hasCache {
		c, err := cacheOf(n, s.Cache, "file", true)
		if err != nil {
			return nil, err
		}
		s.Cache = c
	}
	rest := make(map[string]any, len(m))
	for k, x := range m {
		if k != "aio" && k != "cache" {
			rest[k] = x
		}
	}
	return rest, nil
}
