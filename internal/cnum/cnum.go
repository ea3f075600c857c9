// Package cnum reads numbers as QEMU's util/cutils.c does for its
// command lines (qemu_strtou64 and qemu_strtoul with base 0, over C's
// strtoull): leading white space, an optional sign (a negative number
// wraps around), 0x for hexadecimal, a leading 0 for octal, and nothing
// after the digits. Go's own base 0 also takes 0o, 0b and '_', which C's
// does not; these are refused here.
package cnum

import (
	"strconv"
	"strings"
)

// Uint64 is qemu_strtou64(s, NULL, 0, &v): ok is false where QEMU's
// returns an error.
func Uint64(s string) (v uint64, ok bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	neg := strings.HasPrefix(t, "-")
	if neg || strings.HasPrefix(t, "+") {
		t = t[1:]
	}
	if t == "" || strings.ContainsRune(t, '_') {
		return 0, false
	}
	if len(t) > 1 && t[0] == '0' && strings.ContainsRune("oObB", rune(t[1])) {
		return 0, false
	}
	n, err := strconv.ParseUint(t, 0, 64)
	if err != nil {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}
