package secret

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// TLSCreds is a tls-creds-x509 object (--object
// tls-creds-x509,id=ID,dir=DIR,endpoint=client|server[,verify-peer=on|off]):
// QEMU's x509 credentials, a directory of PEM files laid out as QEMU's
// (ca-cert.pem; client-cert.pem and client-key.pem for a client,
// server-cert.pem and server-key.pem for a server). The Store keeps
// them beside the secrets: QEMU's object ids are one namespace.
type TLSCreds struct {
	ID         string
	Dir        string
	Endpoint   string // "client" (QEMU's default) or "server"
	VerifyPeer bool   // on by default, as QEMU's
}

// addTLS stores a tls-creds-x509 object, refused in QEMU 7.2's words;
// as QEMU loads the credentials when it creates the object, a CA
// certificate (and for a server its certificate and key) that cannot be
// read is refused here.
func (s *Store) addTLS(p map[string]string) error {
	c := TLSCreds{Endpoint: "client", VerifyPeer: true}
	for k, v := range p {
		switch k {
		case "qom-type":
		case "id":
			c.ID = v
		case "dir":
			c.Dir = v
		case "endpoint":
			if v != "client" && v != "server" {
				return newError(ErrInvalid, "Parameter 'endpoint' does not accept value '%s'", v)
			}
			c.Endpoint = v
		case "verify-peer":
			switch v {
			case "on", "yes", "true", "y":
				c.VerifyPeer = true
			case "off", "no", "false", "n":
				c.VerifyPeer = false
			default:
				return newError(ErrInvalid, "Parameter 'verify-peer' expects 'on' or 'off'")
			}
		case "priority", "passwordid", "sanity-check":
			return newError(ErrUnsupported, "Property '%s' of tls-creds-x509 is not supported by qring", k)
		default:
			return newError(ErrInvalid, "Parameter '%s' is unexpected", k)
		}
	}
	switch {
	case c.ID == "":
		return newError(ErrInvalid, "Parameter 'id' is missing")
	case !isIdentifier(c.ID):
		return newError(ErrInvalid, "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.")
	case c.Dir == "":
		return newError(ErrInvalid, "Missing 'dir' property value")
	}
	if s.has(c.ID) {
		return newError(ErrInvalid, "attempt to add duplicate property '%s' to object (type 'container')", c.ID)
	}
	need := []string{"ca-cert.pem"}
	if c.Endpoint == "server" {
		need = append(need, "server-cert.pem", "server-key.pem")
	}
	for _, f := range need {
		p := filepath.Join(c.Dir, f)
		if _, err := os.Stat(p); err != nil {
			return &Error{Kind: ErrInvalid, Msg: "Unable to access credentials " + p + ": " + errText(err), Err: err}
		}
	}
	if s.tls == nil {
		s.tls = map[string]TLSCreds{}
	}
	s.tls[c.ID] = c
	return nil
}

// errText is an error's errno in strerror's words, or its text.
func errText(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		s := en.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// has reports whether an object (secret or credentials) has id.
func (s *Store) has(id string) bool {
	_, sec := s.m[id]
	_, tls := s.tls[id]
	return sec || tls
}

// TLS returns the tls-creds-x509 object id, or QEMU's refusal.
func (s *Store) TLS(id string) (TLSCreds, error) {
	if s != nil {
		if c, ok := s.tls[id]; ok {
			return c, nil
		}
	}
	return TLSCreds{}, newError(ErrUnknown, "No TLS credentials with id '%s'", id)
}
