package flame

import (
	"fmt"
	"io"

	"github.com/google/pprof/profile"
)

// FoldPprof folds a pprof profile (e.g. from --cpuprofile) using sample
// value index vi (-1: the last, which is cpu nanoseconds in a Go CPU
// profile). Inlined functions become frames of their own, as in pprof.
func FoldPprof(r io.Reader, vi int) (Folded, string, error) {
	p, err := profile.Parse(r)
	if err != nil {
		return nil, "", err
	}
	if len(p.SampleType) == 0 {
		return nil, "", fmt.Errorf("profile has no sample types")
	}
	if vi < 0 || vi >= len(p.SampleType) {
		vi = len(p.SampleType) - 1
	}
	unit := p.SampleType[vi].Type + "/" + p.SampleType[vi].Unit
	f := Folded{}
	for _, s := range p.Sample {
		var st []string
		// Locations are leaf first; within a location, Line[0] is the
		// innermost inlined function.
		for i := len(s.Location) - 1; i >= 0; i-- {
			loc := s.Location[i]
			for j := len(loc.Line) - 1; j >= 0; j-- {
				if fn := loc.Line[j].Function; fn != nil {
					st = append(st, fn.Name)
				}
			}
			if len(loc.Line) == 0 {
				st = append(st, fmt.Sprintf("0x%x", loc.Address))
			}
		}
		f.Add(st, s.Value[vi])
	}
	return f, unit, nil
}
