package qcow2

import (
	"bytes"
	"slices"
)

// The bm configurations keep a persistent dirty bitmap (Q22) through
// the whole run: every write, zeroing, discard, queued request, resize
// and snapshot the suite does, under its concurrency. Each clean close
// (every reopen, and the end) reads the stored bitmap back through a
// read-only open: it must be valid (not IN_USE) and dirty wherever the
// contents changed since it was last cleared. The next writable open
// clears it. Crash clones are checked as in every configuration: their
// bitmaps are IN_USE, or stored whole.

const tortureBitmap = "torture"

// bmGran is the bitmap's granularity: 512 bytes to 8 KiB by seed.
func (r *trun) bmGran() uint64 { return 512 << (r.seed % 5) }

// bmStart adds the bitmap to the image just opened at setup.
func (r *trun) bmStart() {
	if err := r.im.AddBitmap(tortureBitmap, r.bmGran(), true); err != nil {
		r.fatalf("add bitmap: %v", err)
	}
	r.bmBase = slices.Clone(r.model)
}

// bmRestart clears the bitmap after a reopen (bmVerify checked it).
func (r *trun) bmRestart() {
	if err := r.im.ClearBitmap(tortureBitmap); err != nil {
		r.fatalf("clear bitmap: %v", err)
	}
	r.bmBase = slices.Clone(r.model)
}

// bmCut follows a shrink to size: the bits past it are dropped, and a
// growth shows the range clean (and zero).
func (r *trun) bmCut(size int64) {
	if int64(len(r.bmBase)) > size {
		r.bmBase = r.bmBase[:size]
	}
}

// bmVerify checks the bitmap of the closed image, open read-only as im.
func (r *trun) bmVerify(im *Image, what string) {
	found := false
	for _, b := range im.Bitmaps() {
		if b.Name == tortureBitmap {
			found = true
			if b.InUse {
				r.fatalf("%s: bitmap in use after a clean close", what)
			}
		}
	}
	if !found {
		r.fatalf("%s: bitmap gone after a clean close: %+v", what, im.Bitmaps())
	}
	for off := int64(0); off < r.size; {
		dirty, n, err := im.DirtyRun(tortureBitmap, off, r.size-off)
		if err != nil || n <= 0 {
			r.fatalf("%s: dirty run at %d: %d, %v", what, off, n, err)
		}
		if !dirty {
			if p := r.bmChanged(off, off+n); p >= 0 {
				r.fatalf("%s: guest offset %#x changed (%#x, was %#x) and its granule is clean in the stored bitmap (run [%#x,+%#x), granularity %d)",
					what, p, r.model[p], r.bmBaseAt(p), off, n, r.bmGran())
			}
		}
		off += n
	}
}

// bmChanged is the first offset in [lo, hi) where the contents differ
// from bmBase (zeros past its end), or -1.
func (r *trun) bmChanged(lo, hi int64) int64 {
	if b := min(hi, int64(len(r.bmBase))); lo < b && !bytes.Equal(r.model[lo:b], r.bmBase[lo:b]) {
		for p := lo; p < b; p++ {
			if r.model[p] != r.bmBase[p] {
				return p
			}
		}
	}
	for p := max(lo, int64(len(r.bmBase))); p < hi; p++ {
		if r.model[p] != 0 {
			return p
		}
	}
	return -1
}

func (r *trun) bmBaseAt(p int64) byte {
	if p < int64(len(r.bmBase)) {
		return r.bmBase[p]
	}
	return 0
}
