// Package chart draws the seed table as a grouped SVG bar chart: one group
// per device, one bar per variant, bar height = median time relative to the
// group's first variant ("before" = 1.0, lower is better), a whisker for
// min–max, and the absolute median in seconds above each bar. Devices run
// different request counts, so only the relative heights compare across
// groups.
package chart

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
)

// Bar is one variant's measurements on one device.
type Bar struct {
	Label            string
	Median, Min, Max float64 // seconds
}

// Group is one device.
type Group struct {
	Label string
	Note  string // e.g. "512k req"
	Bars  []Bar
}

var palette = []string{"#9e9e9e", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728", "#393b79"}

// Render writes the chart.
func Render(w io.Writer, title string, groups []Group) error {
	const (
		barW, gap, groupGap = 46.0, 6.0, 40.0
		left, top, plotH    = 60.0, 60.0, 300.0
	)
	nb := 0
	ymax := 1.2
	for _, g := range groups {
		nb = max(nb, len(g.Bars))
		if len(g.Bars) == 0 || g.Bars[0].Median <= 0 {
			continue
		}
		for _, b := range g.Bars {
			if r := b.Max / g.Bars[0].Median; !math.IsNaN(r) && !math.IsInf(r, 0) {
				ymax = math.Max(ymax, r*1.08)
			}
		}
	}
	groupW := float64(nb)*(barW+gap) + groupGap
	width := left + float64(len(groups))*groupW + 20
	height := top + plotH + 70
	y := func(v float64) float64 { return top + plotH - v/ymax*plotH }
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" standalone="no"?>
<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="Verdana, sans-serif" font-size="11">
<rect width="100%%" height="100%%" fill="white"/>
<text x="%.0f" y="22" text-anchor="middle" font-size="15">%s</text>
<text x="%.0f" y="40" text-anchor="middle" fill="#555">median time relative to the first bar of each device (lower is better); whiskers: min–max; labels: median seconds</text>
`, width, height, width/2, html.EscapeString(title), width/2)
	// Axis and grid.
	step := 0.25
	if ymax > 3 {
		step = 0.5
	}
	if ymax > 6 {
		step = math.Ceil(ymax / 8)
	}
	for v := 0.0; v <= ymax; v += step {
		fmt.Fprintf(bw, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="%s"/><text x="%.0f" y="%.1f" text-anchor="end">%.2f</text>`+"\n",
			left, width-10, y(v), y(v), map[bool]string{true: "#444", false: "#ddd"}[v == 0], left-6, y(v)+4, v)
	}
	fmt.Fprintf(bw, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="4,3"/>`+"\n", left, width-10, y(1), y(1))
	for gi, g := range groups {
		x0 := left + groupGap/2 + float64(gi)*groupW
		base := math.NaN()
		if len(g.Bars) > 0 {
			base = g.Bars[0].Median
		}
		for bi, b := range g.Bars {
			x := x0 + float64(bi)*(barW+gap)
			col := palette[bi%len(palette)]
			if base > 0 && !math.IsNaN(b.Median) {
				r, lo, hi := b.Median/base, b.Min/base, b.Max/base
				fmt.Fprintf(bw, `<g><title>%s %s: median %.3f s (min %.3f, max %.3f)</title><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/></g>`+"\n",
					html.EscapeString(g.Label), html.EscapeString(b.Label), b.Median, b.Min, b.Max, x, y(r), barW, y(0)-y(r), col)
				cx := x + barW/2
				fmt.Fprintf(bw, `<path d="M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f" stroke="#000" fill="none"/>`+"\n",
					cx, y(lo), y(hi), cx-6, y(lo), cx+6, cx-6, y(hi), cx+6)
				fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", cx, y(hi)-4, fmtSec(b.Median))
			}
		}
		cx := x0 + float64(len(g.Bars))*(barW+gap)/2
		fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="12">%s</text>`+"\n", cx, top+plotH+18, html.EscapeString(g.Label))
		if g.Note != "" {
			fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555" font-size="10">%s</text>`+"\n", cx, top+plotH+32, html.EscapeString(g.Note))
		}
	}
	// Legend from the first group's labels.
	if len(groups) > 0 {
		lx := left
		for bi, b := range groups[0].Bars {
			fmt.Fprintf(bw, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
				lx, height-22, palette[bi%len(palette)], lx+16, height-12, html.EscapeString(b.Label))
			lx += 30 + 7*float64(len(b.Label))
		}
	}
	bw.WriteString("</svg>\n")
	return bw.Flush()
}

func fmtSec(s float64) string {
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%.2f s", s)
}
