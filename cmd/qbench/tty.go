package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/qring/qring/uring"
)

// isTerminal reports whether w is a terminal (uring.IsTerminal: a
// character device such as /dev/null is not one).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && uring.IsTerminal(f)
}

// progressBar draws "[=====>    ]  45%  471859/1048576  68.2k IOPS  ETA 8s"
// on one line, redrawn in place.
type progressBar struct {
	w     io.Writer
	drawn bool
}

func (p *progressBar) update(done, total int64, elapsed time.Duration) {
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	iops := 0.0
	if s := elapsed.Seconds(); s > 0 {
		iops = float64(done) / s
	}
	eta := "?"
	if iops > 0 {
		eta = time.Duration(float64(total-done) / iops * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r[%s] %3.0f%%  %d/%d  %.1fk IOPS  ETA %s\x1b[K", bar, frac*100, done, total, iops/1e3, eta)
	p.drawn = true
	if done >= total {
		// Keep the finished bar; the qemu-style lines follow on stdout.
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progressBar) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
