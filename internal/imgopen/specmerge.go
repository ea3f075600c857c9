package imgopen

import (
	"encoding/json"
	"errors"
)

// MergeSpec is a json: spec name under options in the key=value form, as
// qemu-io's open -o OPTS json:{...} opens it: the JSON's keys join the
// options, and an option the JSON also sets keeps the option's value
// (QEMU's qdict_join without overwrite). The result is a json: spec.
func MergeSpec(jsonName, opts string) (string, error) {
	base, err := parseSpec(jsonName, false)
	if err != nil {
		return "", err
	}
	over, err := parseSpec(opts, true)
	if err != nil {
		return "", err
	}
	if err := mergeNodes(over, base); err != nil {
		return "", err
	}
	b, err := json.Marshal(over)
	if err != nil {
		return "", err
	}
	return "json:" + string(b), nil
}

// mergeNodes adds to dst what src has and dst does not, node by node.
func mergeNodes(dst, src map[string]any) error {
	for k, v := range src {
		d, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		dm, dnode := d.(map[string]any)
		sm, snode := v.(map[string]any)
		switch {
		case dnode && snode:
			if err := mergeNodes(dm, sm); err != nil {
				return err
			}
		case dnode != snode:
			return errors.New("image spec: key " + k + " is both a value and a node")
		}
	}
	return nil
}

// SpecReadOnly reports whether a spec's root sets read-only (on, yes,
// true, y: QEMU's booleans): QEMU refuses to open such a node for writing ("Block node is
// read-only"). A spec that does not parse reports false (its open
// reports the error).
func SpecReadOnly(spec string) bool {
	root, err := parseSpec(spec, true)
	if err != nil {
		return false
	}
	switch v := root["read-only"].(type) {
	case bool:
		return v
	case string:
		return v == "on" || v == "yes" || v == "true" || v == "y"
	}
	return false
}
