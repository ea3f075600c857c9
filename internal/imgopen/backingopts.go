package imgopen

import (
	"fmt"
	"sort"

	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
)

// A qcow2 node's backing key: null or "" (QEMU's "no backing file"), a
// string (a node name, which qimg's command lines never define), or the
// options of the backing file its header names, as QEMU's backing.*
// options: the key of an encrypted one (backing.encrypt.key-secret for
// qcow2, backing.key-secret for luks), and its own backing file's
// (backing.backing.*, backing.backing=null). Other options of a backing
// node are refused, never dropped.

// qcow2Backing reads n's backing key: none is backing=null; bo the
// options for the header's backing file. Keys are looked up in store
// unless noKey (metadata only: QEMU looks no secret up).
func qcow2Backing(n *node, store *secret.Store, noKey bool) (none bool, bo *qcow2.BackingOptions, err error) {
	v, ok := n.get("backing")
	if !ok {
		return false, nil, nil
	}
	if m, isNode := v.(map[string]any); isNode {
		bo, err := backingNode(newNode(m, n.name("backing")), store, noKey)
		if err != nil {
			// Where QEMU meets it: opening the backing file.
			return false, nil, &qcow2.BackingError{Err: err}
		}
		return false, bo, nil
	}
	none, err = noBackingKey(n)
	return none, nil, err
}

// backingNode reads the options of one backing file (n: its keys).
func backingNode(n *node, store *secret.Store, noKey bool) (*qcow2.BackingOptions, error) {
	bo := &qcow2.BackingOptions{}
	if v, ok := n.get("encrypt"); ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("image spec: %s: expected encrypt.key-secret=ID", n.name("encrypt"))
		}
		o := qcow2.Options{NoKey: noKey}
		if err := encryptOptions(newNode(m, n.name("encrypt")), store, &o); err != nil {
			return nil, err
		}
		bo.Passphrase, bo.EncryptFormat = o.Passphrase, o.EncryptFormat
		bo.EncryptKeySecret, _ = m["key-secret"].(string)
	}
	if n.has("key-secret") {
		id, err := n.str("key-secret", "")
		if err != nil {
			return nil, err
		}
		bo.KeySecret = id
		if id != "" && !noKey {
			if store == nil {
				store = &secret.Store{}
			}
			if bo.KeyPassphrase, err = store.Passphrase(id); err != nil {
				return nil, err // QEMU's words
			}
		}
	}
	none, inner, err := qcow2Backing(n, store, noKey)
	if err != nil {
		return nil, err
	}
	bo.NoBacking, bo.Backing = none, inner
	var extra []string
	for k := range n.m {
		if !n.used[k] {
			extra = append(extra, n.name(k))
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return nil, fmt.Errorf("image spec: %s: not supported (a backing file takes encrypt.key-secret, encrypt.format, key-secret and backing here)", extra[0])
	}
	return bo, nil
}

// SpecBackingOptions lists the options the root node of a json: or
// key=value spec gives its backing file (backing.*: "encrypt.key-secret",
// "backing.encrypt.key-secret", ...), sorted; none when the spec does not
// parse or gives none (backing=null is none).
func SpecBackingOptions(spec string) []string {
	root, err := parseSpec(spec, false)
	if err != nil {
		return nil
	}
	m, ok := root["backing"].(map[string]any)
	if !ok {
		return nil
	}
	var names []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			names = append(names, prefix+k)
		}
	}
	walk("", m)
	sort.Strings(names)
	return names
}
