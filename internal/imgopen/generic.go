package imgopen

import (
	"fmt"
	"strconv"
)

// QEMU's block layer takes a few keys on every node (BlockdevOptions'
// base: node-name, discard, detect-zeroes, auto-read-only, and
// force-share, which shares the image locks: genericKeys' share) and the file
// driver a few tuning ones (aio-max-batch, drop-cache,
// x-check-cache-dropped). None changes what a node reads: they are
// checked as QEMU checks them, so that a spec QEMU opens opens here, and
// then ignored (a discard is advisory either way, zero detection only
// saves space, the others tune a cache or a batch).

// genericKeys reads and checks those keys of n, a node of driver drv. A
// force-share=on shares the image locks of the whole tree (QEMU's
// children inherit it), which a writable open refuses
// (qcow2.ErrForceShareWritable).
func (b *builder) genericKeys(n *node, drv string) error {
	if b.nodeNames == nil {
		b.nodeNames = map[string]bool{}
	}
	share, err := genericKeys(n, drv, b.nodeNames)
	if share {
		b.def.Opts.ForceShare = true
	}
	return err
}

// genericKeys is builder.genericKeys with names, the node names seen;
// share reports force-share=on.
func genericKeys(n *node, drv string, names map[string]bool) (share bool, err error) {
	err = genericKeysOf(n, drv, names)
	if err == nil && n.has("force-share") {
		share, _ = n.boolean("force-share", false) // checked with the bools
	}
	return share, err
}

func genericKeysOf(n *node, drv string, names map[string]bool) error {
	if n.has("node-name") {
		name, err := n.str("node-name", "")
		if err != nil {
			return err
		}
		if err := checkNodeName(name); err != nil {
			return err
		}
		if names[name] {
			return &ValueError{Msg: fmt.Sprintf("Duplicate nodes with node-name='%s'", name)}
		}
		names[name] = true
	}
	if v, ok := n.m["backing"]; ok && (v == nil || v == "") && drv != "qcow2" && drv != "vmdk" && drv != "vpc" {
		// backing=null: no backing file, which every node takes in QEMU
		// (the formats with one read it themselves).
		n.used["backing"] = true
	}
	unmap := false
	if n.has("discard") {
		s, err := n.str("discard", "")
		if err != nil {
			return err
		}
		switch s {
		case "ignore", "off":
		case "unmap", "on":
			unmap = true
		default:
			return &ValueError{Msg: "Invalid discard option"}
		}
	}
	if n.has("detect-zeroes") {
		s, err := n.str("detect-zeroes", "")
		if err != nil {
			return err
		}
		switch s {
		case "off", "on":
		case "unmap":
			if !unmap {
				return &ValueError{Msg: "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap"}
			}
		default:
			return &ValueError{Msg: "invalid parameter value: " + s}
		}
	}
	bools := []string{"auto-read-only", "force-share"}
	if drv == "file" {
		bools = append(bools, "drop-cache", "x-check-cache-dropped")
		if n.has("aio-max-batch") {
			s, err := n.str("aio-max-batch", "")
			if err != nil {
				return err
			}
			if _, err := strconv.ParseInt(s, 0, 64); err != nil {
				return &ValueError{Msg: "Parameter 'aio-max-batch' expects a number"}
			}
		}
	}
	for _, k := range bools {
		if !n.has(k) {
			continue
		}
		if _, err := n.boolean(k, false); err != nil {
			return &ValueError{Msg: fmt.Sprintf("Parameter '%s' expects 'on' or 'off'", k)}
		}
	}
	return nil
}

// checkNodeName refuses a node name QEMU's id_wellformed refuses (a
// letter, then letters, digits, '-', '.', '_'), or one longer than 31
// bytes.
func checkNodeName(s string) error {
	ok := s != ""
	for i, c := range s {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter || !letter && !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			ok = false
		}
	}
	if !ok {
		return &ValueError{Msg: fmt.Sprintf("Invalid node-name: '%s'", s)}
	}
	if len(s) > 31 {
		return &ValueError{Msg: "Node name too long"}
	}
	return nil
}

// withoutGenericKeys checks the generic keys of v, a file node given as
// a map (see genericKeys), and returns it without them, and whether it
// asked for force-share.
func withoutGenericKeys(v any, names map[string]bool) (any, bool, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return v, false, nil
	}
	n := newNode(m, "file")
	share, err := genericKeys(n, "file", names)
	if err != nil {
		return nil, false, err
	}
	rest := make(map[string]any, len(m))
	for k, x := range m {
		if !n.used[k] {
			rest[k] = x
		}
	}
	return rest, share, nil
}
