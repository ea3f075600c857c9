package main

import (
	"fmt"
	"io"
)

// qemuProgress is QEMU's progress state (util/qemu-progress.c), in C
// floats: print moves it on and prints "    (x.xx/100%)\r" when it moved
// by more than minSkip since the last line, or is at 0% or 100% (each
// time). It never goes back, nor past 100%.
type qemuProgress struct {
	w         io.Writer
	minSkip   float32
	cur, last float32
}

// print is qemu_progress_print(delta, max): with max 0 the progress is
// delta; else it moves on by delta percent of max.
func (p *qemuProgress) print(delta float32, max int) {
	cur := delta
	if max != 0 {
		cur = p.cur + float32(delta/100)*float32(max)
	}
	p.cur = min(max32(p.cur, cur), 100) // it stops at 100 (rebase overshoots)
	if p.cur > p.last+p.minSkip || p.cur == 100 || p.cur == 0 {
		p.last = p.cur
		fmt.Fprintf(p.w, "    (%3.2f/100%%)\r", float64(p.cur))
	}
}

func max32(a, b float32) float32 {
	if b > a {
		return b
	}
	return a
}

// progressPrinter prints qemu-img's progress lines for done out of total
// (min_skip 1, as convert's, amend's and commit's): 0% and 100% each
// time, else a line when it moved on by more than 1%.
func progressPrinter(w io.Writer) func(done, total int64) {
	p := &qemuProgress{w: w, minSkip: 1}
	return func(done, total int64) {
		pct := float32(100)
		if total > 0 {
			pct = float32(100.0 * float64(done) / float64(total))
		}
		p.print(pct, 0)
	}
}
