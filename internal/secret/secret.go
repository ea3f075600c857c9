// Package secret holds passphrases given as QEMU gives them: --object
// secret,id=ID,data=... (or file=PATH, optionally format=base64, or the
// JSON form {"qom-type":"secret","id":...}), looked up by the
// key-secret option of an image (encrypt.key-secret=ID for qcow2,
// key-secret=ID for a raw LUKS volume). It follows QEMU's secret object
// (crypto/secret_common.c, crypto/secret.c in QEMU): the data is used
// as given (a file's trailing newline included), and a passphrase must
// be valid UTF-8 (qcrypto_secret_lookup_as_utf8). Encrypted secrets
// (keyid, iv) and the keyring object are not supported.
package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/qring/qring/internal/optstr"
)

var (
	// ErrNotSecret: the --object argument defines another object type.
	ErrNotSecret = errors.New("secret: not a secret object")
	// ErrUnknown: no secret has the id an option names.
	ErrUnknown = errors.New("secret: no secret with that id")
	// ErrNoKeySecret: an encrypted image was opened or created without
	// its key-secret option.
	ErrNoKeySecret = errors.New("secret: key-secret is required for an encrypted image")
	// ErrInvalid: a malformed secret object or option string.
	ErrInvalid = errors.New("secret: invalid")
	// ErrUnsupported: a secret object feature this package does not
	// implement (keyid/iv encrypted secrets, secret_keyring).
	ErrUnsupported = errors.New("secret: unsupported")
)

// Store holds secrets by id. The zero value is empty and ready to use.
type Store struct {
	m map[string][]byte
	// ReadFile reads a file= secret; nil means os.ReadFile.
	ReadFile func(name string) ([]byte, error)
}

// Add parses one --object argument and stores the secret it defines. An
// object of another type gives an error wrapping ErrNotSecret (the
// caller decides whether other objects are allowed).
func (s *Store) Add(arg string) error {
	props, err := parseObject(arg)
	if err != nil {
		return err
	}
	id, data, err := s.secret(props)
	if err != nil {
		return err
	}
	if _, dup := s.m[id]; dup {
		return fmt.Errorf("%w: duplicate secret id %q", ErrInvalid, id)
	}
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[id] = data
	return nil
}

// Lookup returns the data of secret id (not a copy: do not modify it).
func (s *Store) Lookup(id string) ([]byte, error) {
	d, ok := s.m[id]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknown, id)
	}
	return d, nil
}

// Passphrase returns secret id as a passphrase: valid UTF-8, as QEMU's
// qcrypto_secret_lookup_as_utf8 requires, and cut at its first NUL (QEMU
// hands the C string to PBKDF2).
func (s *Store) Passphrase(id string) ([]byte, error) {
	d, err := s.Lookup(id)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(d) {
		return nil, fmt.Errorf("%w: data from secret %q is not valid UTF-8", ErrInvalid, id)
	}
	if i := bytes.IndexByte(d, 0); i >= 0 {
		d = d[:i]
	}
	if d == nil {
		d = []byte{} // the empty passphrase, not none (qcow2.Options)
	}
	return d, nil
}

// KeyPassphrase finds the key-secret option under prefix ("encrypt."
// for qcow2's create options and --image-opts, "" for the luks driver)
// in a QEMU option string and returns that secret's passphrase. A
// missing option gives ErrNoKeySecret.
func (s *Store) KeyPassphrase(options, prefix string) ([]byte, error) {
	id, ok, err := KeySecretID(options, prefix)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: parameter '%skey-secret' is required for cipher", ErrNoKeySecret, prefix)
	}
	return s.Passphrase(id)
}

// KeySecretID returns the value of the prefix+"key-secret" option in a
// QEMU option string ("encrypt.format=luks,encrypt.key-secret=sec0"),
// and whether it is there.
func KeySecretID(options, prefix string) (string, bool, error) {
	kvs, err := splitOptions(options)
	if err != nil {
		return "", false, err
	}
	id, found := "", false
	for _, kv := range kvs {
		if kv.k != prefix+"key-secret" {
			continue
		}
		if found {
			return "", false, fmt.Errorf("%w: option %q given twice", ErrInvalid, kv.k)
		}
		id, found = kv.v, true
	}
	if found && id == "" {
		return "", false, fmt.Errorf("%w: empty %skey-secret", ErrInvalid, prefix)
	}
	return id, found, nil
}

// secret builds a secret from an object's properties, as QEMU's
// qcrypto_secret_common_load_data: exactly one of data and file, format
// raw (default) or base64.
func (s *Store) secret(p map[string]string) (string, []byte, error) {
	switch t := p["qom-type"]; t {
	case "secret":
	case "secret_keyring":
		return "", nil, fmt.Errorf("%w: object type %q", ErrUnsupported, t)
	default:
		return "", nil, fmt.Errorf("%w: object type %q", ErrNotSecret, t)
	}
	id := p["id"]
	if id == "" {
		return "", nil, fmt.Errorf("%w: secret object without an id", ErrInvalid)
	}
	for k := range p {
		switch k {
		case "qom-type", "id", "data", "file", "format":
		case "keyid", "iv":
			return "", nil, fmt.Errorf("%w: encrypted secret %q (%s)", ErrUnsupported, id, k)
		default:
			return "", nil, fmt.Errorf("%w: secret %q: unknown property %q", ErrInvalid, id, k)
		}
	}
	data, hasData := p["data"]
	file, hasFile := p["file"]
	var raw []byte
	switch {
	case hasData && hasFile:
		return "", nil, fmt.Errorf("%w: secret %q: 'data' and 'file' are mutually exclusive", ErrInvalid, id)
	case hasData:
		raw = []byte(data)
	case hasFile:
		rf := s.ReadFile
		if rf == nil {
			rf = os.ReadFile
		}
		b, err := rf(file)
		if err != nil {
			return "", nil, fmt.Errorf("secret %q: %w", id, err)
		}
		raw = b
	default:
		return "", nil, fmt.Errorf("%w: secret %q: either 'file' or 'data' must be provided", ErrInvalid, id)
	}
	switch f := p["format"]; f {
	case "", "raw":
	case "base64":
		d, err := base64.StdEncoding.DecodeString(string(raw))
		if err != nil {
			return "", nil, fmt.Errorf("%w: secret %q: bad base64: %v", ErrInvalid, id, err)
		}
		raw = d
	default:
		return "", nil, fmt.Errorf("%w: secret %q: format %q (raw, base64)", ErrInvalid, id, f)
	}
	return id, raw, nil
}

// parseObject turns an --object argument into its properties: the JSON
// form ({"qom-type":"secret","id":"sec0","data":"abc"}) or the key=value
// form, whose first element may be the bare type (secret,id=sec0,...).
func parseObject(arg string) (map[string]string, error) {
	p := map[string]string{}
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(arg))
		if err := d.Decode(&m); err != nil {
			return nil, fmt.Errorf("%w: object %q: %v", ErrInvalid, arg, err)
		}
		if d.More() {
			return nil, fmt.Errorf("%w: object %q: trailing data", ErrInvalid, arg)
		}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%w: object property %q is not a string", ErrInvalid, k)
			}
			p[k] = s
		}
		return p, nil
	}
	kvs, err := splitOptions(arg)
	if err != nil {
		return nil, err
	}
	for i, kv := range kvs {
		k, v := kv.k, kv.v
		if i == 0 && !kv.eq {
			k, v = "qom-type", kv.k
		} else if !kv.eq {
			return nil, fmt.Errorf("%w: object %q: %q has no value", ErrInvalid, arg, kv.k)
		}
		if _, dup := p[k]; dup {
			return nil, fmt.Errorf("%w: object %q: %q given twice", ErrInvalid, arg, k)
		}
		p[k] = v
	}
	return p, nil
}

// option is one key=value element of an option string; eq is false for
// a bare word.
type option struct {
	k, v string
	eq   bool
}

// splitOptions splits a QEMU option string at commas (",," is a literal
// comma) into its elements.
func splitOptions(s string) ([]option, error) {
	var out []option
	for _, kv := range optstr.Split(s) {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("%w: option %q", ErrInvalid, kv)
		}
		out = append(out, option{k, v, ok})
	}
	return out, nil
}
