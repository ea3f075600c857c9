//go:build linux

package uring

// The EOF gate (U3): what a request that may grow the file holds of
// eofGate, and how a request on a Direct file takes wmu (U1) without
// losing the gate to a Truncate.

// gate is what a request holds of eofGate, ordered by strength.
type gate uint8

const (
	noGate     gate = iota // inside eof: no gate
	gateShared             // a write ending past eof
	gateExcl               // a fallocate ending past eof
)

// gateFor is the gate a request needs as eof stands now: exclusive if
// its fallocate ends past eof (zend), shared if only its write does
// (wend); 0 for what the request does not do.
func (f *File) gateFor(zend, wend int64) gate {
	eof := f.eof.Load()
	switch {
	case zend > eof:
		return gateExcl
	case wend > eof:
		return gateShared
	}
	return noGate
}

// takeGate takes the gate a request needs (gateFor) and returns it, for
// unlockGate. While any gate is held eof only grows: a Truncate holds it
// exclusively.
func (f *File) takeGate(zend, wend int64) gate {
	g := f.gateFor(zend, wend)
	if g == noGate && f.testEOFLooked != nil {
		f.testEOFLooked()
	}
	f.lockGate(g)
	return g
}

func (f *File) lockGate(g gate) {
	switch g {
	case gateShared:
		f.eofGate.RLock()
	case gateExcl:
		f.eofGate.Lock()
	}
}

func (f *File) unlockGate(g gate) {
	switch g {
	case gateShared:
		f.eofGate.RUnlock()
	case gateExcl:
		f.eofGate.Unlock()
	}
}

// lockWMU takes wmu (exclusively with excl) for a request on a Direct
// file that holds the gate *g it needed when it looked at eof (U1, U3).
// A Truncate may have shrunk the file below the request's end since, and
// the request, inside eof then, would now grow the file without the gate:
// a write past the end beside an extending fallocate, the race U3 is
// there to prevent. Once wmu is held no Truncate can run (it holds wmu
// exclusively), so eof is looked at again under it; if the request needs
// more of the gate now, it gives wmu back, takes the gate (lock order:
// eofGate, then wmu) and wmu again, and *g says what it holds.
func (f *File) lockWMU(excl bool, g *gate, zend, wend int64) {
	for {
		if excl {
			f.wmu.Lock()
		} else {
			f.wmu.RLock()
		}
		need := f.gateFor(zend, wend)
		if need <= *g {
			return
		}
		if excl {
			f.wmu.Unlock()
		} else {
			f.wmu.RUnlock()
		}
		f.unlockGate(*g)
		*g = need
		f.lockGate(need)
	}
}
