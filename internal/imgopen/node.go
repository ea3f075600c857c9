package imgopen

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/qring/qring/qcow2"
)

// node is one driver's options with use tracking, so a typo is an error.
type node struct {
	m    map[string]any
	used map[string]bool
	path string // for messages: "children.1.file"
}

func newNode(m map[string]any, path string) *node {
	return &node{m: m, used: map[string]bool{}, path: path}
}

func (n *node) has(k string) bool { _, ok := n.m[k]; return ok }

func (n *node) get(k string) (any, bool) {
	v, ok := n.m[k]
	if ok {
		n.used[k] = true
	}
	return v, ok
}

// need is get for a key the driver cannot do without.
func (n *node) need(k string) (any, error) {
	v, ok := n.get(k)
	if !ok {
		return nil, &ValueError{Msg: fmt.Sprintf("A block device must be specified for \"%s\"", k)}
	}
	return v, nil
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
	switch s { // QEMU's qapi_bool_parse
	case "on", "true", "yes", "y":
		return true, nil
	case "off", "false", "no", "n":
		return false, nil
	}
	return false, fmt.Errorf("%s: invalid boolean %q (on, off)", n.name(k), s)
}

// size reads a size option: 0 when absent; an empty value is refused,
// as QEMU refuses it.
func (n *node) size(k string) (int64, error) {
	v, _, err := n.sizeGiven(k)
	return v, err
}

// sizeGiven is size, and whether the option was given (size=0 is not
// the same as no size: QEMU's has_size).
func (n *node) sizeGiven(k string) (int64, bool, error) {
	if _, ok := n.get(k); !ok {
		return 0, false, nil
	}
	s, err := n.str(k, "")
	if err != nil {
		return 0, false, err
	}
	v, err := qcow2.ParseSize(s)
	if err != nil {
		return 0, false, SizeParamError(n.name(k))
	}
	return v, true, nil
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
			extra = append(extra, leafKeys(n.name(k), n.m[k])...)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	// QEMU names one: the first, here in sorted order.
	sort.Strings(extra)
	drv := fmt.Sprint(n.m["driver"])
	return &OptionError{Driver: drv, Option: strings.TrimPrefix(extra[0], n.name("")), Protocol: drv == "file"}
}

// leafKeys are the flat names of the options under key k of value v, as
// QEMU names them ("snapshot.name", not "snapshot"): k itself for a
// value that is not a node.
func leafKeys(k string, v any) []string {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return []string{k}
	}
	var out []string
	for c, cv := range m {
		out = append(out, leafKeys(k+"."+c, cv)...)
	}
	return out
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
