package optstr

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{",", nil},
		{"a=1", []string{"a=1"}},
		{"a=1,b=2", []string{"a=1", "b=2"}},
		{"a=1,,b=2", []string{"a=1,b=2"}},
		{"a=x,,,b", []string{"a=x,", "b"}},
		{",,", []string{","}},
		{"a,,b,,,,c", []string{"a,b,,c"}},
		{",a,,b,", []string{"a,b"}},
		{"a,,", []string{"a,"}},
		{" k = v ", []string{" k = v "}},
	} {
		if got := Split(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"a=1,b=2", "a,,b", ",,,", "x=,,,,y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		parts := Split(s)
		for _, p := range parts {
			if p == "" {
				t.Fatalf("Split(%q) has an empty element", s)
			}
		}
	})
}
