// Package secret holds passphrases given as QEMU gives them: --object
// secret,id=ID,data=... (or file=PATH, optionally format=base64, or the
// JSON form {"qom-type":"secret","id":...}), looked up by the
// key-secret option of an image (encrypt.key-secret=ID for qcow2,
// key-secret=ID for a raw LUKS volume). It follows QEMU's secret object
// (crypto/secret_common.c, crypto/secret.c in QEMU): the data is used
// as given (a file's trailing newline included), and a passphrase must
// be valid UTF-8 (qcrypto_secret_lookup_as_utf8). Encrypted secrets
// (keyid, iv) and the keyring object are not supported. The Store also
// keeps tls-creds-x509 objects (TLSCreds), for NBD clients: QEMU's
// objects share one namespace of ids.
package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
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

// Error is a fault of an --object argument or a secret lookup in QEMU
// 7.2's words (Msg: what qemu-img prints after its name), of one of the
// kinds above (errors.Is matches Kind) and with its cause, if any (Err:
// a file's read error).
type Error struct {
	Kind error
	Msg  string
	Err  error
}

func (e *Error) Error() string        { return e.Msg }
func (e *Error) Is(target error) bool { return target == e.Kind }
func (e *Error) Unwrap() error        { return e.Err }

func newError(kind error, format string, a ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, a...)}
}

// Store holds secrets by id. The zero value is empty and ready to use.
type Store struct {
	m   map[string][]byte
	tls map[string]TLSCreds // tls-creds-x509 objects (tlscreds.go)
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
	if props["qom-type"] == "tls-creds-x509" {
		return s.addTLS(props)
	}
	id, data, err := s.secret(props)
	if err != nil {
		return err
	}
	if s.has(id) {
		return newError(ErrInvalid, "attempt to add duplicate property '%s' to object (type 'container')", id)
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
		return nil, newError(ErrUnknown, "No secret with id '%s'", id)
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
		return nil, newError(ErrInvalid, "Data from secret %s is not valid UTF-8", id)
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
		return nil, newError(ErrNoKeySecret, "Parameter '%skey-secret' is required for cipher", prefix)
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
	t, ok := p["qom-type"]
	switch {
	case !ok:
		return "", nil, newError(ErrInvalid, "Parameter 'qom-type' is missing")
	case t == "secret":
	case t == "secret_keyring":
		return "", nil, newError(ErrUnsupported, "Object type '%s' is not supported by qring (secret only)", t)
	case !qomTypes[t]:
		return "", nil, newError(ErrNotSecret, "Parameter 'qom-type' does not accept value '%s'", t)
	case notInTools[t]:
		return "", nil, newError(ErrNotSecret, "invalid object type: %s", t)
	default:
		return "", nil, newError(ErrNotSecret, "Object type '%s' is not supported by qring (secret only)", t)
	}
	id, ok := p["id"]
	if !ok {
		return "", nil, newError(ErrInvalid, "Parameter 'id' is missing")
	}
	if !isIdentifier(id) {
		return "", nil, newError(ErrInvalid, "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.")
	}
	for _, k := range []string{"keyid", "iv"} {
		if _, ok := p[k]; ok {
			return "", nil, newError(ErrUnsupported, "Encrypted secrets (%s) are not supported by qring", k)
		}
	}
	for k := range p {
		switch k {
		case "qom-type", "id", "data", "file", "format":
		default:
			return "", nil, newError(ErrInvalid, "Parameter '%s' is unexpected", k)
		}
	}
	data, hasData := p["data"]
	file, hasFile := p["file"]
	var raw []byte
	switch {
	case hasData && hasFile:
		return "", nil, newError(ErrInvalid, "'file' and 'data' are mutually exclusive")
	case hasData:
		raw = []byte(data)
	case hasFile:
		rf := s.ReadFile
		if rf == nil {
			rf = os.ReadFile
		}
		b, err := rf(file)
		if err != nil {
			return "", nil, &Error{Kind: ErrInvalid, Msg: fmt.Sprintf("Unable to read %s: %s", file, gliberror(file, err)), Err: err}
		}
		raw = b
	default:
		return "", nil, newError(ErrInvalid, "Either 'file' or 'data' must be provided")
	}
	switch f := p["format"]; f {
	case "", "raw":
	case "base64":
		d, err := qbase64Decode(raw)
		if err != nil {
			return "", nil, err
		}
		raw = d
	default:
		return "", nil, newError(ErrInvalid, "Parameter 'format' does not accept value '%s'", f)
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
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, newError(ErrInvalid, "JSON parse error, premature EOI")
			}
			return nil, fmt.Errorf("%w: object %q: %v", ErrInvalid, arg, err)
		}
		if d.More() {
			return nil, fmt.Errorf("%w: object %q: trailing data", ErrInvalid, arg)
		}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return nil, newError(ErrInvalid, "Invalid parameter type for '%s', expected: string", k)
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
			return nil, newError(ErrInvalid, "Expected '=' after parameter '%s'", kv.k)
		}
		p[k] = v // of a key given twice, the last, as QEMU's
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

// qomTypes are the object types QEMU 7.2 knows (its QAPI ObjectType):
// another name is not a type at all ("does not accept value"); of
// these, qring takes secret only.
var qomTypes = map[string]bool{}

func init() {
	for _, t := range strings.Fields(`authz-list authz-listfile authz-pam authz-simple can-bus
		can-host-socketcan colo-compare cryptodev-backend cryptodev-backend-builtin
		cryptodev-backend-lkcf cryptodev-vhost-user dbus-vmstate filter-buffer filter-dump
		filter-mirror filter-redirector filter-replay filter-rewriter input-barrier input-linux
		iothread main-loop memory-backend-epc memory-backend-file memory-backend-memfd
		memory-backend-ram pef-guest pr-manager-helper qtest rng-builtin rng-egd rng-random
		s390-pv-guest secret secret_keyring sev-guest thread-context throttle-group
		tls-cipher-suites tls-creds-anon tls-creds-psk tls-creds-x509 x-remote-object
		x-vfio-user-server`) {
		qomTypes[t] = true
	}
}

// notInTools are the types of qomTypes that QEMU's tools do not have at
// all (qemu-img: "invalid object type").
var notInTools = map[string]bool{"can-bus": true, "cryptodev-backend": true, "cryptodev-backend-builtin": true,
	"cryptodev-backend-lkcf": true, "iothread": true, "pef-guest": true, "rng-builtin": true, "rng-random": true,
	"s390-pv-guest": true}

// isIdentifier is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.' and '_'.
func isIdentifier(id string) bool {
	for i, c := range []byte(id) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_')) {
			return false
		}
	}
	return id != ""
}

// gliberror is a file read's failure as GLib's g_file_get_contents words
// it (QEMU reads a secret's file with it).
func gliberror(name string, err error) string {
	msg := err.Error()
	var en syscall.Errno
	if errors.As(err, &en) {
		msg = en.Error()
		msg = strings.ToUpper(msg[:1]) + msg[1:]
	}
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "open" {
		return fmt.Sprintf("Failed to open file \u201c%s\u201d: %s", name, msg)
	}
	return fmt.Sprintf("Error reading file \u201c%s\u201d: %s", name, msg)
}

// qbase64Decode decodes base64 as QEMU's qbase64_decode: every byte
// must be of the alphabet, '=' or a newline, and GLib's lenient
// g_base64_decode does the rest (groups of four symbols; a '=' among
// the last two drops the bytes after it; an incomplete last group and
// newlines are ignored).
func qbase64Decode(in []byte) ([]byte, error) {
	if bytes.IndexByte(in, 0) >= 0 {
		return nil, newError(ErrInvalid, "Base64 data contains embedded NUL characters")
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var out []byte
	var v uint32
	var last [2]byte
	n := 0
	for _, c := range in {
		rank := strings.IndexByte(alphabet, c)
		switch {
		case c == '=':
			rank = 0
		case c == '\n':
			continue
		case rank < 0:
			return nil, newError(ErrInvalid, "Base64 data contains invalid characters")
		}
		last[1], last[0] = last[0], c
		v = v<<6 | uint32(rank)
		if n++; n == 4 {
			out = append(out, byte(v>>16))
			if last[1] != '=' {
				out = append(out, byte(v>>8))
			}
			if last[0] != '=' {
				out = append(out, byte(v))
			}
			n = 0
		}
	}
	return out, nil
}
