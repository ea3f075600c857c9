package main

import (
	"fmt"
	"strconv"
	"strings"
)

// option is one command-line option: a short letter (0 if none), a long
// name and whether it takes a value.
type option struct {
	short byte
	long  string
	arg   bool
	help  string
}

// connectHint answers qemu-nbd's -c/--connect DEV, which qnbd does not
// have: the kernel's NBD client attaches to a qnbd socket instead.
const connectHint = "qnbd does not attach /dev/nbdN itself (qemu-nbd -c): serve on a socket (-k PATH) and attach\n" +
	"the kernel's client to it (nbd-client -unix PATH /dev/nbdN), or mount it with nbdfuse"

// options are qemu-nbd's, as far as qnbd implements them.
var options = []option{
	{'f', "format", true, "image format: qcow2, raw, vmdk, vpc or luks (default: probe)"},
	{'x', "export-name", true, "export name (default \"\")"},
	{'D', "description", true, "export description"},
	{'p', "port", true, "TCP port to listen on (default 10809)"},
	{'b', "bind", true, "address to listen on (default 0.0.0.0)"},
	{'k', "socket", true, "listen on this Unix socket (an absolute path) instead of TCP; -p and -b do not count then"},
	{'r', "read-only", false, "export read-only"},
	{'L', "list", false, "list the exports of the server at -k SOCKET or -b HOST (default 0.0.0.0, this host) -p PORT, as qemu-nbd -L, and exit (no TLS)"},
	{'t', "persistent", false, "keep serving after the last client disconnected (the default)"},
	{0, "once", false, "exit once the last client disconnected (qemu-nbd's default without -t); connections that never negotiate (port scans, probes) are no clients"},
	{'e', "shared", true, "serve at most N clients at once (default 1; 0: no limit)"},
	{'n', "nocache", false, "same as --cache=none"},
	{0, "cache", true, "cache mode: none, writeback (default), writethrough, directsync, unsafe"},
	{0, "aio", true, "AIO mode: io_uring (default) or threads (native, Linux AIO, is refused)"},
	{0, "discard", true, "TRIM and unmapping zero writes: ignore (default) or unmap (on)"},
	{0, "detect-zeroes", true, "turn zero writes into zeroing: off (default), on, unmap (needs --discard=unmap)"},
	{'s', "snapshot", false, "serve a temporary qcow2 overlay over FILE (in $TMPDIR, else /var/tmp; gone at exit): FILE is opened read-only and is never written"},
	{'l', "load-snapshot", true, "serve the internal snapshot SNAPSHOT of FILE, read-only: snapshot.id=ID,snapshot.name=NAME, or an ID or a name"},
	{'B', "bitmap", true, "offer the image's persistent dirty bitmap NAME as the metadata context qemu:dirty-bitmap:NAME; repeatable"},
	{'A', "allocation-depth", false, "expose the allocation depth (qemu:allocation-depth)"},
	{0, "handshake-limit", true, "seconds a client may take to negotiate (default 10; 0: no limit)"},
	{0, "fork", false, "fork off the server once it listens; the parent exits"},
	{0, "pid-file", true, "write the server's process id to this file"},
	{0, "image-opts", false, "FILE is an image spec (driver=...,file=... or json:{...})"},
	{0, "object", true, "secret,id=ID,data=...|file=...: a passphrase for encrypt.key-secret=ID; tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]: TLS credentials for --tls-creds=ID; authz-simple,id=ID,identity=DN: the one client certificate name --tls-authz=ID lets in (',,' for a comma); repeatable"},
	{'o', "options", true, "qcow2 engine options (l2-cache-size=..., prealloc=...), repeatable; not qemu-nbd's --offset (--image-opts driver=raw,offset=N,...)"},
	{0, "tls-creds", true, "ID of a --object tls-creds-x509 (qemu-nbd's form), or DIR[,verify-peer=on|off]: TLS from QEMU's tls-creds-x509 dir= (server-cert.pem, server-key.pem, ca-cert.pem, optional ca-crl.pem); clients must present a certificate ca-cert.pem signs, unless verify-peer=off"},
	{0, "tls-authz", true, "ID of a --object authz-simple: with --tls-creds (verify-peer=on), only a client certificate whose distinguished name is its identity is let in"},
	{0, "tls-cert", true, "TLS certificate (PEM); with --tls-key, makes TLS mandatory (clients are not authenticated)"},
	{0, "tls-key", true, "TLS private key (PEM)"},
	{'v', "verbose", false, "log connections and failed requests"},
	{'h', "help", false, "print this help and exit"},
	{'V', "version", false, "print the version and exit"},
}

// flags is the parsed command line: values by long name, and the
// positional arguments.
type flags struct {
	vals map[string][]string
	args []string
}

func (f *flags) has(k string) bool { return len(f.vals[k]) > 0 }

func (f *flags) get(k, def string) string {
	if v := f.vals[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return def
}

func (f *flags) int(k string, def int) (int, error) {
	s := f.get(k, "")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid value %q for --%s", s, k)
	}
	return n, nil
}

// parseFlags parses args like getopt_long with permutation.
func parseFlags(args []string) (*flags, error) {
	f := &flags{vals: map[string][]string{}}
	byShort := map[byte]*option{}
	byLong := map[string]*option{}
	for i := range options {
		o := &options[i]
		if o.short != 0 {
			byShort[o.short] = o
		}
		byLong[o.long] = o
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			f.args = append(f.args, args[i+1:]...)
			return f, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			o := byLong[name]
			if o == nil {
				if name == "offset" {
					return nil, fmt.Errorf("unrecognized option '--offset'\n%s", offsetHint("N", "FILE"))
				}
				if name == "connect" || strings.HasPrefix("connect", name) && len(name) > 1 && byLong[name] == nil {
					return nil, fmt.Errorf("unrecognized option '--%s'\n%s", name, connectHint)
				}
				return nil, fmt.Errorf("unrecognized option '--%s'", name)
			}
			if o.arg && !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			} else if !o.arg && hasVal {
				return nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
			}
			f.vals[o.long] = append(f.vals[o.long], val)
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				o := byShort[a[j]]
				if o == nil {
					if a[j] == 'c' {
						return nil, fmt.Errorf("invalid option -- 'c'\n%s", connectHint)
					}
					return nil, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				if !o.arg {
					f.vals[o.long] = append(f.vals[o.long], "")
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("option requires an argument -- '%c'", a[j])
					}
					i++
					val = args[i]
				}
				f.vals[o.long] = append(f.vals[o.long], val)
				break
			}
		default:
			f.args = append(f.args, a)
		}
	}
	return f, nil
}

func usage() string {
	var b strings.Builder
	b.WriteString("usage: qnbd [OPTIONS] FILE\n\nExport a disk image over NBD with the qring engine (qemu-nbd's options).\n\n")
	for _, o := range options {
		s := "    "
		if o.short != 0 {
			s = fmt.Sprintf("-%c, ", o.short)
		}
		s += "--" + o.long
		if o.arg {
			s += "=ARG"
		}
		fmt.Fprintf(&b, "  %-26s %s\n", s, o.help)
	}
	return b.String()
}
