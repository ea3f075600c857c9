package main

import "github.com/qring/qring/internal/imgopen"

// convertSrc is convert's input: the images given, read one after
// another as one (qemu-img convert's concatenation of several inputs,
// "qemu-img convert a b c OUT"). Each image starts where the whole
// sectors of the ones before it end, as qemu-img counts them
// (blk_nb_sectors): an image whose size is not a multiple of 512 is
// padded with zeros to its next sector.
type convertSrc struct {
	parts []*image
	start []int64 // where each part starts in the output
	// size is the output's size: the image's own size for one input (a
	// new output rounds it up to whole sectors itself), the sum of the
	// images' sizes in whole sectors for several.
	size int64
}

// newConvertSrc is the input made of parts, in the order given.
func newConvertSrc(parts []*image) *convertSrc {
	s := &convertSrc{parts: parts, start: make([]int64, len(parts))}
	var off int64
	for i, p := range parts {
		s.start[i] = off
		off += roundUp(p.size, 512)
	}
	s.size = off
	if len(parts) == 1 {
		s.size = parts[0].size
	}
	return s
}

// part is the index of the part holding the output offset off (below
// the end of the last part).
func (s *convertSrc) part(off int64) int {
	i := 0
	for i+1 < len(s.parts) && off >= s.start[i+1] {
		i++
	}
	return i
}

// end is where part i ends in the output (its whole sectors).
func (s *convertSrc) end(i int) int64 {
	return s.start[i] + roundUp(s.parts[i].size, 512)
}

// readSrc reads p at the output offset off: from each part it spans (a
// compressed output's cluster may span several), with --salvage's
// retry (readSalvaging) and zeros past each part's end.
func readSrc(src *convertSrc, dst convertOut, off int64, p []byte) error {
	for len(p) > 0 {
		i := src.part(off)
		n := min(int64(len(p)), src.end(i)-off)
		if n <= 0 { // past the last part: whole sectors of zeros
			clear(p)
			return nil
		}
		if err := readSalvaging(src.parts[i], dst, off-src.start[i], p[:n]); err != nil {
			return err
		}
		off, p = off+n, p[n:]
	}
	return nil
}

// openedSources holds the images convert opened, to be closed together.
type openedSources []*imgopen.Opened

func (s openedSources) Close() {
	for _, o := range s {
		o.Close()
	}
}
