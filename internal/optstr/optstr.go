// Package optstr splits QEMU option strings ("a=1,b=2", as in qemu-img
// -o and --object): elements are separated by commas and ",," stands for
// a literal comma. What an element means is the caller's: this package
// only splits.
package optstr

import "strings"

// Split returns the non-empty elements of s in order, with ",," turned
// into ",".
func Split(s string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			flush()
			continue
		}
		cur.WriteByte(s[i])
	}
	flush()
	return out
}
