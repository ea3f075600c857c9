package nbd

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Address is where an export is: a server's socket and the export's
// name.
type Address struct {
	Network string // "unix" or "tcp"
	Addr    string // a socket path, or host:port
	Export  string
}

// DefaultPort is the NBD port IANA assigned (section "Protocol phases").
const DefaultPort = 10809

// ErrBadURI is a name that is not an NBD URI QEMU takes, in qemu-img's
// words.
var ErrBadURI = errors.New("No valid URL specified")

// ParseURI reads an NBD URI as QEMU's nbd driver does (nbd_parse_uri;
// the NBD project's doc/uri.md): nbd://HOST[:PORT][/EXPORT] or
// nbd+tcp://... over TCP (port 10809 by default), and
// nbd+unix:///[EXPORT]?socket=PATH over a Unix socket. The export is the
// path without its first '/', percent-decoded; a TCP URI takes no query,
// a Unix one exactly socket=, and no host. TLS (nbds) is not known here,
// as it is not to QEMU 7.2's qemu-img.
func ParseURI(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Fragment != "" {
		return Address{}, ErrBadURI
	}
	var a Address
	switch u.Scheme {
	case "nbd", "nbd+tcp":
		a.Network = "tcp"
	case "nbd+unix":
		a.Network = "unix"
	default:
		return Address{}, ErrBadURI
	}
	a.Export = strings.TrimPrefix(u.Path, "/")
	params := queryParams(u.RawQuery)
	if a.Network == "unix" {
		if u.Host != "" || len(params) != 1 || params[0][0] != "socket" {
			return Address{}, ErrBadURI
		}
		a.Addr = params[0][1]
		return a, nil
	}
	if len(params) != 0 || u.Hostname() == "" {
		return Address{}, ErrBadURI
	}
	port := u.Port()
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return Address{}, ErrBadURI
	}
	a.Addr = net.JoinHostPort(u.Hostname(), port)
	return a, nil
}

// queryParams splits a query at '&' and ';' as QEMU's
// query_params_parse does, names and values percent-decoded.
func queryParams(q string) [][2]string {
	var out [][2]string
	for _, p := range strings.FieldsFunc(q, func(r rune) bool { return r == '&' || r == ';' }) {
		k, v, _ := strings.Cut(p, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		out = append(out, [2]string{k, v})
	}
	return out
}

// URI is the address as QEMU names an NBD node (nbd_refresh_filename):
// nbd://HOST:PORT[/EXPORT] or nbd+unix://[/EXPORT]?socket=PATH, the
// export and path as they are, not escaped.
func (a Address) URI() string {
	exp := ""
	if a.Export != "" {
		exp = "/" + a.Export
	}
	if a.Network == "unix" {
		return "nbd+unix://" + exp + "?socket=" + a.Addr
	}
	host, port, err := net.SplitHostPort(a.Addr)
	if err != nil {
		return "nbd://" + a.Addr + exp
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "nbd://" + host + ":" + port + exp
}

// ShownAddr is the address as QEMU's connection errors name it: the
// socket path, or HOST:PORT with an IPv6 host unbracketed.
func (a Address) ShownAddr() string {
	if a.Network == "unix" {
		return a.Addr
	}
	host, port, err := net.SplitHostPort(a.Addr)
	if err != nil {
		return a.Addr
	}
	return host + ":" + port
}
