package main

import (
	"fmt"
	"io"
)

// progressPrinter prints qemu-img's "    (x.xx/100%)" lines for done
// out of total, as QEMU's qemu_progress_print does with a min_skip of 1
// (in C floats): a line when the progress moved on by more than 1% since
// the last one printed, and one each time it is at 0% or 100%. It never
// goes back.
func progressPrinter(w io.Writer) func(done, total int64) {
	var cur, last float32
	return func(done, total int64) {
		pct := float32(100)
		if total > 0 {
			pct = float32(100.0 * float64(done) / float64(total))
		}
		cur = max(cur, pct)
		if cur > last+1 || cur == 100 || cur == 0 {
			last = cur
			fmt.Fprintf(w, "    (%3.2f/100%%)\r", float64(cur))
		}
	}
}
