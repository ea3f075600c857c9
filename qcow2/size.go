package qcow2

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// ParseSize parses a size as QEMU's qemu_strtosz (its size options and
// qemu-img's size arguments): a decimal integer (a leading 0 is not
// octal), or hexadecimal after 0x without a fraction; a fraction only
// with a suffix ("1.5G"; no exponent); at most one suffix of B, k, M, G,
// T, P or E (powers of 1024, either case) and nothing after it. Leading
// white space is skipped, as strtoull does. Sizes past 2^62 are refused.
func ParseSize(s string) (int64, error) {
	v, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	if v > 1<<62 {
		return 0, fmt.Errorf("%w: %q", ErrSizeRange, s)
	}
	return int64(v), nil
}

// ErrSizeRange is a size ParseSize refuses for its value: past 2^62
// (ParseSizeFull: past 2^64-1, qemu_strtosz's ERANGE).
var ErrSizeRange = errors.New("size too large")

// ParseSizeFull is ParseSize over the whole range qemu_strtosz takes, up
// to 2^64-1, for a caller that words the sizes past 2^62 as QEMU does
// (qemu-img resize: "New image size must be positive" from 2^63 on).
func ParseSizeFull(s string) (uint64, error) { return parseSize(s) }

func parseSize(s string) (uint64, error) {
	bad := fmt.Errorf("invalid size %q", s)
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	t = strings.TrimPrefix(t, "+")
	i := digits(t, 10)
	if i == 0 {
		return 0, bad
	}
	val, err := strconv.ParseUint(t[:i], 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%w: %q", ErrSizeRange, s)
	}
	if err != nil {
		return 0, bad
	}
	rest := t[i:]
	var frac uint64 // the fraction in 0.64 fixed point, as QEMU keeps it
	switch {
	case val == 0 && (strings.HasPrefix(rest, "x") || strings.HasPrefix(rest, "X")):
		h := rest[1:]
		n := digits(h, 16)
		if n == 0 {
			return 0, bad
		}
		if val, err = strconv.ParseUint(h[:n], 16, 64); err != nil {
			return 0, bad
		}
		rest = h[n:] // a suffix may follow (deprecated in QEMU, taken)
		if strings.HasPrefix(rest, ".") {
			return 0, bad
		}
	case strings.HasPrefix(rest, "."):
		n := 1 + digits(rest[1:], 10)
		if strings.HasPrefix(rest[n:], "e") || strings.HasPrefix(rest[n:], "E") {
			// strtod would take an exponent when digits follow; QEMU
			// refuses one, and "1.5e" is 1.5 EiB.
			if e := rest[n+1:]; digits(strings.TrimLeft(e, "+-"), 10) > 0 {
				return 0, bad
			}
		}
		if n > 1 {
			// qemu_strtosz reads the fraction as a double (strtod,
			// correctly rounded, as ParseFloat) and keeps its first 64
			// bits after the point: "7.999E" is 9222219115350168960,
			// not the exact decimal's ...961.
			f, _ := strconv.ParseFloat("0"+rest[:n], 64)
			if f >= 1 { // 17 nines and more round to 1.0
				frac = math.MaxUint64
			} else {
				frac = uint64(f * 0x1p64)
			}
		}
		rest = rest[n:]
	}
	mul := uint64(1)
	if rest != "" {
		m, ok := sizeSuffix(rest[0])
		if !ok {
			return 0, bad
		}
		mul, rest = m, rest[1:]
	}
	if rest != "" {
		return 0, bad
	}
	if frac != 0 && mul == 1 {
		return 0, bad // a fraction needs a suffix
	}
	// 64.64 fixed point times the suffix, the fraction's half rounded
	// up, as QEMU's do_strtosz.
	hi, v := bits.Mul64(val, mul)
	fhi, flo := bits.Mul64(frac, mul)
	var c uint64
	v, c = bits.Add64(v, fhi, 0)
	hi += c
	v, c = bits.Add64(v, flo>>63, 0)
	hi += c
	if hi != 0 {
		return 0, fmt.Errorf("%w: %q", ErrSizeRange, s)
	}
	return v, nil
}

// digits counts the leading digits of s in base 8, 10 or 16.
func digits(s string, base int) int {
	i := 0
	for i < len(s) {
		c := s[i]
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		default:
			return i
		}
		if d >= base {
			return i
		}
		i++
	}
	return i
}

func sizeSuffix(c byte) (uint64, bool) {
	switch c {
	case 'b', 'B':
		return 1, true
	case 'k', 'K':
		return 1 << 10, true
	case 'm', 'M':
		return 1 << 20, true
	case 'g', 'G':
		return 1 << 30, true
	case 't', 'T':
		return 1 << 40, true
	case 'p', 'P':
		return 1 << 50, true
	case 'e', 'E':
		return 1 << 60, true
	}
	return 0, false
}

// ParseNumber parses a number option as QEMU's (qemu_strtou64 in base
// 0, as C's strtoull): decimal, octal after a leading 0, hexadecimal
// after 0x.
func ParseNumber(s string) (uint64, error) {
	bad := fmt.Errorf("invalid number %q", s)
	t := strings.TrimPrefix(strings.TrimLeft(s, " \t\n\v\f\r"), "+")
	base := 10
	switch {
	case len(t) > 2 && (t[:2] == "0x" || t[:2] == "0X"):
		t, base = t[2:], 16
	case len(t) > 1 && t[0] == '0':
		t, base = t[1:], 8
	}
	if t == "" || digits(t, base) != len(t) {
		return 0, bad
	}
	v, err := strconv.ParseUint(t, base, 64)
	if err != nil {
		return 0, bad
	}
	return v, nil
}
