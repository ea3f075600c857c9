package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/qring/qring/qcow2"
)

// commitProgress prints qemu-img commit -p's progress lines (min_skip
// 1). qemu-img commits through a mirror job: 0% once the image is open
// (then a new line whatever happens), 0% at each poll while the job
// scans what lies above the base (twice at least), then the share of
// those bytes copied, and 100% when the job is ready (unless there was
// nothing to copy) and again once it completed. Between the first and
// the last, how many lines QEMU prints depends on its timing; these are
// the ones a run that polls after each chunk prints.
type commitProgress struct {
	p       *qemuProgress
	w       io.Writer
	started bool
	total   int64  // the bytes above the base: what the layers allocate
	covered []span // what was copied, merged
}

type span struct{ off, end int64 }

func newCommitProgress(w io.Writer) *commitProgress {
	return &commitProgress{p: &qemuProgress{w: w, minSkip: 1}, w: w}
}

// start is 0% once the image is open.
func (c *commitProgress) start() {
	if c != nil && !c.started {
		c.started = true
		c.p.print(0, 100)
	}
}

// scan notes what the layers allocate below limit (their union is what
// the job copies) and prints the polls of the job's scan.
func (c *commitProgress) scan(layers []*qcow2.Image, limit int64, extra []span) error {
	if c == nil {
		return nil
	}
	spans := slices.Clone(extra)
	for _, im := range layers {
		for off := int64(0); off < limit; {
			st, err := im.BlockStatus(off, limit-off)
			if err != nil {
				return err
			}
			if st.Len <= 0 {
				break
			}
			if st.Allocated {
				spans = append(spans, span{off, off + st.Len})
			}
			off += st.Len
		}
	}
	for _, s := range mergeSpans(spans) {
		c.total += s.end - s.off
	}
	c.p.print(0, 100)
	c.p.print(0, 100)
	return nil
}

// copied prints the share of what lies above the base that has been
// copied, now that [off, end) has (again, for a lower layer's range an
// upper layer overwrites, which counts once).
func (c *commitProgress) copied(off, end int64) {
	if c == nil || c.total == 0 || off >= end {
		return
	}
	c.covered = mergeSpans(append(c.covered, span{off, end}))
	var done int64
	for _, s := range c.covered {
		done += s.end - s.off
	}
	c.p.print(float32(min(done, c.total))/float32(c.total)*100, 0)
}

// mergeSpans sorts spans and merges those that touch.
func mergeSpans(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int { return int(min(max(a.off-b.off, -1), 1)) })
	var out []span
	for _, s := range spans {
		if k := len(out) - 1; k >= 0 && s.off <= out[k].end {
			out[k].end = max(out[k].end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}

// done is the job ready (100% unless it copied nothing) and completed.
func (c *commitProgress) done() {
	if c == nil {
		return
	}
	if c.total > 0 {
		c.p.print(100, 0)
	}
	c.p.print(100, 0)
}

// end is qemu_progress_end: a new line if the image was opened.
func (c *commitProgress) end() {
	if c != nil && c.started {
		fmt.Fprintln(c.w)
	}
}
