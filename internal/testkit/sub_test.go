package testkit

import (
	"strings"
	"testing"
)

// m is a metrics type with the shapes the real ones have: counters of
// several widths, gauges, a nested struct of counters, an array and a
// nested struct of settings taken from the receiver.
type m struct {
	Reads, Writes int64
	Bytes         uint64
	Small         uint8
	Ratio         float64
	InFlight      int64 // gauge
	Inner         struct{ Hits, Misses int64 }
	Lat           [3]uint32
	Info          struct {
		On   bool
		Name string
		Size int64
	} // settings: kept
}

// sub is a correct Sub for m.
func (a m) sub(b m) m {
	r := a
	r.Reads, r.Writes, r.Bytes = a.Reads-b.Reads, a.Writes-b.Writes, a.Bytes-b.Bytes
	r.Small, r.Ratio = a.Small-b.Small, a.Ratio-b.Ratio
	r.Inner.Hits, r.Inner.Misses = a.Inner.Hits-b.Inner.Hits, a.Inner.Misses-b.Inner.Misses
	for i := range r.Lat {
		r.Lat[i] -= b.Lat[i]
	}
	return r
}

var mKept = []string{"InFlight", "Info"}

func TestCheckSub_Correct(t *testing.T) {
	CheckSub(t, m.sub, mKept...)
}

// TestCheckSub_Broken: each deliberately broken Sub fails CheckSub with
// the field it got wrong named.
func TestCheckSub_Broken(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  func(a, b m) m
		kept []string
		want []string // one per error reported, a part of it
	}{
		{"forgotten, copied from the receiver", func(a, b m) m { r := a.sub(b); r.Writes = a.Writes; return r }, mKept,
			[]string{"m.Sub: Writes = 6, want 6 - 2 = 4 (the receiver's value: forgotten?)"}},
		{"forgotten, left zero", func(a, b m) m { r := a.sub(b); r.Bytes = 0; return r }, mKept,
			[]string{"m.Sub: Bytes = 0, want 9 - 3 = 6 (left zero: forgotten?)"}},
		{"nested field", func(a, b m) m { r := a.sub(b); r.Inner.Misses = a.Inner.Misses; return r }, mKept,
			[]string{"m.Sub: Inner.Misses = "}},
		{"array element", func(a, b m) m { r := a.sub(b); r.Lat[2] = a.Lat[2]; return r }, mKept,
			[]string{"m.Sub: Lat[2] = "}},
		{"wrong way round", func(a, b m) m { r := a.sub(b); r.Reads = b.Reads - a.Reads; return r }, mKept,
			[]string{"m.Sub: Reads = -2, want 3 - 1 = 2 (subtracted the wrong way round)"}},
		{"swapped fields", func(a, b m) m { r := a.sub(b); r.Reads, r.Writes = r.Writes, r.Reads; return r }, mKept,
			[]string{"m.Sub: Reads = 4, want 3 - 1 = 2", "m.Sub: Writes = 2, want 6 - 2 = 4"}},
		{"gauge subtracted", func(a, b m) m { r := a.sub(b); r.InFlight -= b.InFlight; return r }, mKept,
			[]string{"m.Sub: InFlight is kept from the receiver, but Sub returned"}},
		{"setting not kept", func(a, b m) m { r := a.sub(b); r.Info.Size = 0; return r }, mKept,
			[]string{"m.Sub: Info.Size is kept from the receiver, but Sub returned 0"}},
		{"gauge not listed", m.sub, []string{"Info"},
			[]string{"m.Sub: InFlight = 18, want 18 - 6 = 12 (the receiver's value: forgotten?)"}},
		{"string not listed", m.sub, []string{"InFlight", "Info.On", "Info.Size"},
			[]string{"CheckSub testkit.m: Info.Name is a string, which Sub cannot subtract: list it as kept"}},
		{"stale kept name", m.sub, append([]string{"Gone"}, mKept...),
			[]string{`CheckSub testkit.m: kept field "Gone" does not exist`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeT(t, t.Name())
			f.run(func(f *fakeT) { CheckSub(f, tc.sub, tc.kept...) })
			if len(f.errs) != len(tc.want) {
				t.Fatalf("errors %q, want %d", f.errs, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(f.errs[i], w) {
					t.Errorf("error %q lacks %q", f.errs[i], w)
				}
			}
		})
	}
}

func TestCheckSub_Unsupported(t *testing.T) {
	type withSlice struct {
		N    int64
		Hist []int64
	}
	f := newFakeT(t, t.Name())
	f.run(func(f *fakeT) { CheckSub(f, func(a, b withSlice) withSlice { return a }) })
	if len(f.errs) != 1 || !strings.Contains(f.errs[0], "Hist is a []int64") {
		t.Errorf("errors %q", f.errs)
	}
}
