package main

import (
	"strings"
	"testing"
)

// TestEngineOpts_ReadOnlyRepairRefused: qnbd's -o takes engine options
// but not read-only (which exported a read-only image advertised
// writable, every write then failing: -r is the flag) or repair (which
// served an image marked corrupt writable, where qemu-nbd refuses it).
func TestEngineOpts_ReadOnlyRepairRefused(t *testing.T) {
	for _, c := range []struct {
		o  string
		ok bool
	}{
		{"repair=on", false},
		{"read-only=on", false},
		{"l2-cache-size=1M,read_only=off", false},
		{"l2-cache-size=1M,prealloc=off", true},
	} {
		f, err := parseFlags([]string{"-o", c.o, "img.qcow2"})
		if err == nil {
			_, err = configure(f)
		}
		if (err == nil) != c.ok || !c.ok && !strings.Contains(err.Error(), "is not taken by -o") {
			t.Errorf("qnbd -o %s: error %v, want accepted %v", c.o, err, c.ok)
		}
	}
}
