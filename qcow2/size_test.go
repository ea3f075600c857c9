package qcow2

import "testing"

// TestParseSize_LikeQemu: sizes as qemu_strtosz reads them (a leading 0
// is decimal: "01536000" was octal, and amend -o size= shrank an image
// that qemu-img grows).
func TestParseSize_LikeQemu(t *testing.T) {
	for s, want := range map[string]int64{
		"0": 0, "512": 512, "010": 10, "01536000": 1536000, "4k": 4096, "64K": 64 << 10,
		"1M": 1 << 20, "2G": 2 << 30, "1T": 1 << 40, "512B": 512, "512b": 512,
		"1.5G": 3 << 29, "1.k": 1024, "1.": 1, "1.0": 1, "0.5k": 512, "1.5e": 3 << 59 >> 0,
		"0x10": 16, "0X1f": 31, "0x10M": 16 << 20, " 8": 8, "+8": 8, "4611686018427387904": 1 << 62,
		"3.999E": 4610533096922781056, "1.001k": 1025, "3.3M": 3460301,
	} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", " ", "-1", "0b1000", "1_024", "1KiB", "1kB", "1.5e3", "1.5e3k", "512.5", ".5k",
		"0x", "0x1.8", "1e3", "8 ", "1k ", "1kk", "4q", "NaN", "Inf", "4611686018427387905", "16E", "18446744073709551616"} {
		if got, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, got)
		}
	}
}

// TestParseNumber_LikeQemu: number options (refcount_bits) as QEMU's
// qemu_strtou64 in base 0.
func TestParseNumber_LikeQemu(t *testing.T) {
	for s, want := range map[string]uint64{"16": 16, "0x10": 16, "020": 16, "0": 0, "+1": 1} {
		if got, err := ParseNumber(s); err != nil || got != want {
			t.Errorf("ParseNumber(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "08", "0x", "1_6", "0b10", "16k", "-1", "1.0"} {
		if got, err := ParseNumber(s); err == nil {
			t.Errorf("ParseNumber(%q) = %d, want an error", s, got)
		}
	}
}
