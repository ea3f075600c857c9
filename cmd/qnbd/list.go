package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/qring/qring/nbd"
)

// listExports is -L: it lists the exports of the server at -k SOCKET or
// -b HOST -p PORT (default 0.0.0.0:10809, the local host, as qemu-nbd's) in qemu-nbd -L's format
// (qemu-nbd.c's list_some_exports), and exits. TLS is not spoken: a
// server that requires it says so, and qnbd reports it.
func listExports(f *flags, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "qnbd: %v\n", err)
		return 1
	}
	if err := checkValues(f); err != nil {
		return fail(err)
	}
	if err := listModeError(f); err != nil {
		return fail(err)
	}
	if f.has("tls-creds") || f.has("tls-cert") {
		return fail(fmt.Errorf("-L with TLS is not supported"))
	}
	network, addr := "unix", f.get("socket", "")
	if addr == "" {
		var err error
		if addr, err = tcpAddress(f); err != nil {
			return fail(err)
		}
		network = "tcp"
	}
	conn, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return fail(fmt.Errorf("Failed to connect to '%s': %s", addr, errnoText(err)))
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	exports, err := nbd.ListExports(conn)
	if err != nil {
		return fail(err)
	}
	fmt.Fprint(stdout, formatExports(exports))
	return 0
}

// flagNames are qemu-nbd -L's names of the transmission flags, by bit.
var flagNames = []string{1: "readonly", 2: "flush", 3: "fua", 4: "rotational", 5: "trim", 6: "zeroes",
	7: "df", 8: "multi", 9: "resize", 10: "cache", 11: "fast-zero"}

// formatExports is qemu-nbd -L's listing.
func formatExports(exports []nbd.ExportInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "exports available: %d\n", len(exports))
	for _, e := range exports {
		fmt.Fprintf(&b, " export: '%s'\n", e.Name)
		if e.Description != "" {
			fmt.Fprintf(&b, "  description: %s\n", e.Description)
		}
		if e.Flags&nbd.FlagHasFlags != 0 {
			fmt.Fprintf(&b, "  size:  %d\n", e.Size)
			fmt.Fprintf(&b, "  flags: 0x%x (", e.Flags)
			for i, n := range flagNames {
				if n != "" && e.Flags&(1<<i) != 0 {
					fmt.Fprintf(&b, " %s", n)
				}
			}
			b.WriteString(" )\n")
		}
		if e.HasBlockSize && e.MinBlock != 0 {
			fmt.Fprintf(&b, "  min block: %d\n  opt block: %d\n  max block: %d\n", e.MinBlock, e.OptBlock, e.MaxBlock)
		}
		if len(e.Contexts) > 0 {
			fmt.Fprintf(&b, "  available meta contexts: %d\n", len(e.Contexts))
			for _, c := range e.Contexts {
				fmt.Fprintf(&b, "   %s\n", c)
			}
		}
	}
	return b.String()
}
