package imgopen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/protocol"
	"github.com/qring/qring/nbd"
)

// QEMU's nbd driver: an export of an NBD server as a node, named by a
// URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH), by
// QEMU's older "nbd:HOST:PORT[:exportname=E]" and
// "nbd:unix:PATH[:exportname=E]", or by a node's options (server.type
// inet or unix with host and port or path, export; the legacy host,
// port, path). What the export holds is probed like a file's bytes
// (qemu-img info of a qcow2 image served raw says qcow2).

// IsNBDName reports whether name is an NBD file name QEMU's nbd driver
// takes: its protocol prefix is nbd, nbd+tcp or nbd+unix.
func IsNBDName(name string) bool { return protocol.IsNBD(name) }

// NBDSpec is the json: spec that opens the NBD name (IsNBDName) with
// format drv ("": probed), as qemu-img opens the name.
func NBDSpec(name, drv string) string {
	root := map[string]any{"file": map[string]any{"driver": "nbd", "filename": name}}
	if drv != "" {
		root["driver"] = drv
	}
	b, _ := json.Marshal(root)
	return "json:" + string(b)
}

// ParseNBDName reads an NBD file name as QEMU's nbd_parse_filename: a
// URI when it holds "://", else "nbd:" followed by HOST:PORT or
// unix:PATH, and ":exportname=NAME" at the end. The errors are
// qemu-img's.
func ParseNBDName(name string) (nbd.Address, error) {
	if strings.Contains(name, "://") {
		return nbd.ParseURI(name)
	}
	rest, ok := strings.CutPrefix(name, "nbd:")
	if !ok {
		return nbd.Address{}, errors.New("File name string must start with 'nbd:'")
	}
	var a nbd.Address
	if i := strings.Index(rest, ":exportname="); i >= 0 {
		a.Export = rest[i+len(":exportname="):]
		rest = rest[:i]
	}
	if rest == "" {
		return nbd.Address{}, errors.New("NBD server address missing")
	}
	if p, ok := strings.CutPrefix(rest, "unix:"); ok {
		a.Network, a.Addr = "unix", p
		return a, nil
	}
	host, port, err := inetParse(rest)
	if err != nil {
		return nbd.Address{}, err
	}
	a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	return a, nil
}

// inetParse is QEMU's inet_parse for HOST:PORT ([HOST]:PORT for IPv6).
func inetParse(s string) (host, port string, err error) {
	bad := fmt.Errorf("error parsing address '%s'", s)
	if strings.HasPrefix(s, "[") {
		i := strings.Index(s, "]:")
		if i < 0 {
			return "", "", bad
		}
		host, port = s[1:i], s[i+2:]
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return "", "", bad
		}
		host, port = s[:i], s[i+1:]
	}
	if port == "" {
		return "", "", bad
	}
	if host == "" {
		host = "localhost"
	}
	return host, port, nil
}

// nbd opens an nbd node: its address from filename, server.*, or the
// legacy path, host and port; export; tls-creds and tls-hostname
// (nbd_tls.go); read-only as any leaf.
func (b *builder) nbd(n *node) (block.Device, error) {
	_, _, ro, err := b.leaf(n)
	if err != nil {
		return nil, err
	}
	a, err := nbdAddress(n)
	if err != nil {
		return nil, err
	}
	cfg, err := b.nbdTLS(n, a)
	if err != nil {
		return nil, err
	}
	c, err := nbd.Dial(context.Background(), a, nbd.ClientOptions{ReadOnly: ro, TLS: cfg})
	if r := (*certRefusal)(nil); errors.As(err, &r) {
		return nil, r // QEMU's words alone (nbd_tlsname.go)
	}
	if err != nil {
		return nil, err
	}
	if !ro && c.Flags()&nbd.FlagReadOnly != 0 {
		// QEMU's nbd driver fails a writable open of a read-only
		// export with EPERM (bdrv_open_driver's words).
		c.Close()
		return nil, errors.New("Could not open image: Permission denied")
	}
	b.setNoDir(c, "nbd")
	return c, nil
}

func nbdAddress(n *node) (nbd.Address, error) {
	var a nbd.Address
	filename, err := n.str("filename", "")
	if err != nil {
		return a, err
	}
	export, err := n.str("export", "")
	if err != nil {
		return a, err
	}
	legacy := n.has("path") || n.has("host") || n.has("port")
	if filename != "" {
		if legacy || n.has("server") || n.has("export") {
			return a, errors.New("No extra parameter allowed if an NBD URI is given")
		}
		return ParseNBDName(filename)
	}
	a.Export = export
	if legacy {
		if n.has("server") {
			return a, errors.New("Cannot use 'server' and path/host/port at the same time")
		}
		path, err := n.str("path", "")
		if err != nil {
			return a, err
		}
		host, err := n.str("host", "")
		if err != nil {
			return a, err
		}
		port, err := n.str("port", "10809")
		if err != nil {
			return a, err
		}
		switch {
		case path != "" && host != "":
			return a, errors.New("An NBD export must have either a path or a host, not both")
		case path != "":
			a.Network, a.Addr = "unix", path
		default:
			a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
		}
		return a, nil
	}
	sv, ok := n.get("server")
	if !ok {
		return a, errors.New("NBD server address missing")
	}
	sm, ok := sv.(map[string]any)
	if !ok {
		return a, fmt.Errorf("Invalid parameter type for '%s', expected: object", n.name("server"))
	}
	s := newNode(sm, n.name("server"))
	typ, err := s.str("type", "")
	if err != nil {
		return a, err
	}
	switch typ {
	case "unix":
		if a.Addr, err = s.str("path", ""); err != nil {
			return a, err
		}
		if a.Addr == "" {
			return a, fmt.Errorf("Parameter '%s' is missing", s.name("path"))
		}
		a.Network = "unix"
	case "inet":
		host, err := s.str("host", "")
		if err != nil {
			return a, err
		}
		port, err := s.str("port", "")
		if err != nil {
			return a, err
		}
		if host == "" || port == "" {
			return a, fmt.Errorf("Parameter '%s' is missing", s.name(map[bool]string{true: "host", false: "port"}[host == ""]))
		}
		a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	case "":
		return a, fmt.Errorf("Parameter '%s' is missing", s.name("type"))
	default:
		return a, fmt.Errorf("qring's NBD client does not connect over %s sockets (unix, inet)", typ)
	}
	if err := s.done(); err != nil {
		return a, err
	}
	return a, nil
}

// nbdNodeName is the name QEMU gives an nbd node m (the canonical URI of
// its address), or name when its options do not make an address.
func nbdNodeName(name string, m map[string]any) string {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	delete(c, "driver")
	a, err := nbdAddress(newNode(c, ""))
	if err != nil {
		return name
	}
	return a.URI()
}
