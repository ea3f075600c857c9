package qcow2_test

import (
	"testing"

	"github.com/qring/qring/qcow2"
)

// FuzzParseSize: ParseSize (image and engine option sizes, qimg and
// qbench size arguments) returns an error or a size in [0, 2^62], and
// never panics.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "64k", "1.5G", "0x10M", " 2T ", "8EiB", "-1", "1e3.", ".5k", "", "9223372036854775807", "4611686018427387904", "0x1.8p1M", "NaN", "+Inf.", "1e400."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := qcow2.ParseSize(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("ParseSize(%q) = %d with error %v", s, v, err)
			}
			return
		}
		if v < 0 || v > 1<<62 {
			t.Fatalf("ParseSize(%q) = %d, out of [0, 2^62]", s, v)
		}
	})
}
