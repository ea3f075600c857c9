package format

import "bytes"

// HeaderSector is the span of a header rewrite that is taken to reach
// the media whole or not at all: one 512-byte sector. A write of more may
// tear, any subset of its sectors landing.
const HeaderSector = 512

// byteRange is [off, end) of the header cluster.
type byteRange struct{ off, end uint64 }

// headerUsed returns the ranges of the header cluster that h's reader
// looks at: the fixed header with its extension list up to and with the
// end marker, and the backing file name. h is as parsed or encoded
// (HeaderLength, Extensions, BackingFileOffset and BackingFileSize set).
func headerUsed(h *Header) []byteRange {
	end := uint64(h.HeaderLength)
	for _, e := range h.Extensions {
		end += 8 + (uint64(len(e.Data))+7)&^7
	}
	end += 8 // the end marker
	r := []byteRange{{0, end}}
	if h.BackingFileOffset != 0 {
		r = append(r, byteRange{h.BackingFileOffset, h.BackingFileOffset + uint64(h.BackingFileSize)})
	}
	return r
}

func inRanges(rs []byteRange, p uint64) bool {
	for _, r := range rs {
		if p >= r.off && p < r.end {
			return true
		}
	}
	return false
}

// PlanHeaderWrite returns the writes that replace the header cluster
// whose media bytes begin with old (at least up to the end of what its
// header uses) by the encoding of h, so that a power cut at any point,
// tearing any write into any subset of its sectors, leaves either the old
// header or the new one, each with all it reads intact (FM6). Each write
// is a whole cluster at offset 0; a flush must separate them.
//
// A rewrite that changes only the first sector, or only adds bytes past
// it where the old header does not look, needs no care beyond the order:
// those bytes first (with the old first sector), a flush, then the first
// sector. A rewrite that would change bytes past the first sector that
// the old header reads (an upgrade moving the extension list, a new
// backing file name) is laid out differently: the extension list kept
// in the first sector (without the optional feature name table if it
// must), and the backing file name where the old header does not look.
// When no such layout fits in the cluster (small clusters, long
// extension lists), the one write is QEMU's plain rewrite, which a torn
// write can damage, as QEMU's can.
//
// On success h is updated as Encode updates it, for the layout chosen.
func PlanHeaderWrite(old []byte, h *Header) ([][]byte, error) {
	ws, _, err := planHeaderWrite(old, h)
	return ws, err
}

// planHeaderWrite is PlanHeaderWrite, saying whether the plan keeps FM6
// (false: QEMU's plain rewrite).
func planHeaderWrite(old []byte, h *Header) ([][]byte, bool, error) {
	enc, err := h.Encode() // the plain rewrite, and the fallback
	if err != nil {
		return nil, false, err
	}
	oh, err := ParseHeader(old)
	if err != nil {
		return [][]byte{enc}, false, nil // nothing known to keep
	}
	oldUsed := headerUsed(oh)
	cs := uint64(len(enc))
	for _, cand := range h.layouts(oldUsed) {
		b, nh, ok := cand()
		if !ok {
			continue
		}
		newUsed := headerUsed(nh)
		if w, ok := mergeHeader(old, oldUsed, b, newUsed, cs); ok {
			*h = *nh
			return w, true, nil
		}
	}
	return [][]byte{enc}, false, nil
}

// layouts lists the candidate encodings of h, in order of preference:
// QEMU's layout, then the backing file name moved past what the old
// header reads, each with the extensions as they are and then without
// the feature name table.
func (h *Header) layouts(oldUsed []byteRange) []func() ([]byte, *Header, bool) {
	var out []func() ([]byte, *Header, bool)
	variants := []*Header{h}
	if hasExt(h.Extensions, ExtFeatureNames) {
		v := *h
		v.Extensions = nil
		for _, e := range h.Extensions {
			if e.Type != ExtFeatureNames {
				v.Extensions = append(v.Extensions, e)
			}
		}
		variants = append(variants, &v)
	}
	starts := []uint64{0, HeaderSector}
	for _, r := range oldUsed {
		starts = append(starts, (r.end+7)&^7)
	}
	for _, v := range variants {
		for _, at := range starts {
			if at != 0 && v.BackingFile == "" {
				continue
			}
			out = append(out, func() ([]byte, *Header, bool) {
				c := *v
				c.Extensions = append([]Extension(nil), v.Extensions...)
				b, err := c.encodeAt(at)
				return b, &c, err == nil
			})
		}
	}
	return out
}

func hasExt(es []Extension, typ uint32) bool {
	for _, e := range es {
		if e.Type == typ {
			return true
		}
	}
	return false
}

// mergeHeader builds the writes for the new encoding enc (reading
// newUsed) over old (reading oldUsed): refused when enc would change a
// byte past the first sector that old reads. Past the first sector the
// bytes old reads stay and the bytes enc reads are set; the first sector
// is old's in the first write and enc's in the last.
func mergeHeader(old []byte, oldUsed []byteRange, enc []byte, newUsed []byteRange, cs uint64) ([][]byte, bool) {
	base := make([]byte, cs)
	needFirst := false
	top := uint64(0) // past every range, no header reads a byte
	for _, r := range append(append([]byteRange(nil), oldUsed...), newUsed...) {
		top = max(top, r.end)
	}
	for p := uint64(HeaderSector); p < min(cs, top); p++ {
		o, n := inRanges(oldUsed, p), inRanges(newUsed, p)
		switch {
		case o && n:
			if p >= uint64(len(old)) || old[p] != enc[p] {
				return nil, false
			}
			base[p] = old[p]
		case o:
			if p < uint64(len(old)) {
				base[p] = old[p]
			}
		case n:
			// What the media holds where old does not look is not
			// known for sure (a failed write may have changed it).
			base[p] = enc[p]
			needFirst = true
		}
	}
	last := append([]byte(nil), base...)
	copy(last, enc[:min(HeaderSector, cs)])
	if !needFirst {
		return [][]byte{last}, true
	}
	first := append([]byte(nil), base...)
	copy(first, old[:min(uint64(len(old)), HeaderSector, cs)])
	if bytes.Equal(first, last) {
		return [][]byte{last}, true
	}
	return [][]byte{first, last}, true
}

// HeaderUsedEnd is the end of the bytes of the header cluster h's reader
// looks at: what a writer must remember of the media to plan the next
// rewrite (PlanHeaderWrite).
func HeaderUsedEnd(h *Header) uint64 {
	end := uint64(0)
	for _, r := range headerUsed(h) {
		end = max(end, r.end)
	}
	return end
}
