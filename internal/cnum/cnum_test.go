package cnum

import "testing"

func TestUint64(t *testing.T) {
	for _, c := range []struct {
		s  string
		v  uint64
		ok bool
	}{
		{"0", 0, true}, {"10", 10, true}, {"0x10", 16, true}, {"010", 8, true}, {" 5", 5, true}, {"+7", 7, true},
		{"-1", 1<<64 - 1, true}, {"18446744073709551615", 1<<64 - 1, true},
		{"", 0, false}, {"x", 0, false}, {"1x", 0, false}, {"5 ", 0, false}, {"0o7", 0, false}, {"0b1", 0, false},
		{"1_000", 0, false}, {"18446744073709551616", 0, false}, {"-", 0, false}, {"08", 0, false},
	} {
		v, ok := Uint64(c.s)
		if ok != c.ok || ok && v != c.v {
			t.Errorf("Uint64(%q) = %d, %v; want %d, %v", c.s, v, ok, c.v, c.ok)
		}
	}
}
