// Package flame folds stack samples and renders them as an SVG flame graph,
// with no external tools: folded stacks ("a;b;c 42", Brendan Gregg's
// format) come from a pprof CPU profile (FoldPprof), from `perf script`
// output (FoldPerfScript) or from a file, and Render draws them.
//
// Layout: the root spans the full width; each frame's children are sorted
// by name and laid left to right in proportion to their sample counts; a
// frame's y is its depth from the bottom. Frames narrower than MinWidth
// pixels are dropped (their samples still count in the parent).
package flame

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"html"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Folded maps a stack, root first, frames joined by ";", to its weight.
type Folded map[string]int64

// Add adds weight w to the stack given root first.
func (f Folded) Add(stack []string, w int64) {
	if len(stack) == 0 || w <= 0 {
		return
	}
	f[strings.Join(stack, ";")] += w
}

// Write prints f in folded form, sorted, one "stack weight" per line.
func (f Folded) Write(w io.Writer) error {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bw := bufio.NewWriter(w)
	for _, k := range keys {
		fmt.Fprintf(bw, "%s %d\n", k, f[k])
	}
	return bw.Flush()
}

// ParseFolded reads folded lines ("a;b;c 42"); blank lines are skipped.
func ParseFolded(r io.Reader) (Folded, error) {
	f := Folded{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			return nil, fmt.Errorf("folded line %d: no weight: %q", n, line)
		}
		w, err := strconv.ParseInt(line[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("folded line %d: %v", n, err)
		}
		f.Add(strings.Split(line[:i], ";"), w)
	}
	return f, sc.Err()
}

// FoldPerfScript folds the output of `perf script` (samples separated by
// blank lines; a header line "comm pid ... event:" then one frame per line,
// leaf first: "\taddr sym+off (dso)"). Each stack gets the command name as
// its root, as stackcollapse-perf.pl does.
func FoldPerfScript(r io.Reader) (Folded, error) {
	f := Folded{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var comm string
	var frames []string
	flush := func() {
		if comm != "" && len(frames) > 0 {
			st := make([]string, 0, len(frames)+1)
			st = append(st, comm)
			for i := len(frames) - 1; i >= 0; i-- {
				st = append(st, frames[i])
			}
			f.Add(st, 1)
		}
		comm, frames = "", frames[:0]
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] != ' ' && line[0] != '\t':
			flush()
			if fs := strings.Fields(line); len(fs) > 0 {
				comm = fs[0]
			}
		default:
			fs := strings.Fields(line)
			if len(fs) < 2 {
				continue
			}
			sym := strings.Join(fs[1:], " ")
			dso := ""
			if j := strings.LastIndex(sym, " ("); j >= 0 && strings.HasSuffix(sym, ")") {
				dso = sym[j+2 : len(sym)-1]
				sym = sym[:j]
			}
			if j := strings.LastIndex(sym, "+0x"); j > 0 {
				sym = sym[:j]
			}
			if sym == "[unknown]" && dso != "" {
				sym = "[" + dso[strings.LastIndexByte(dso, '/')+1:] + "]"
			}
			if strings.Contains(dso, "kernel") {
				sym += "_[k]"
			}
			frames = append(frames, strings.ReplaceAll(sym, ";", ":"))
		}
	}
	flush()
	return f, sc.Err()
}

// node is one frame in the merged tree.
type node struct {
	name     string
	value    int64
	children map[string]*node
}

func (n *node) child(name string) *node {
	if n.children == nil {
		n.children = map[string]*node{}
	}
	c := n.children[name]
	if c == nil {
		c = &node{name: name}
		n.children[name] = c
	}
	return c
}

func build(f Folded) *node {
	root := &node{name: "all"}
	for st, w := range f {
		root.value += w
		n := root
		for _, fr := range strings.Split(st, ";") {
			n = n.child(fr)
			n.value += w
		}
	}
	return root
}

// Options control Render.
type Options struct {
	Title    string
	Width    int     // pixels (default 1200)
	FrameH   int     // pixels per frame (default 16)
	MinWidth float64 // drop frames narrower than this (default 0.1 px)
	Unit     string  // what a weight is, for tooltips ("samples")
}

// Frame is one rectangle of a rendered graph (exported for tests).
type Frame struct {
	Name  string
	Depth int
	X, W  float64
	Value int64
}

// Layout computes the frames Render draws, root (depth 0) included.
func Layout(f Folded, o Options) []Frame {
	o = o.defaults()
	root := build(f)
	if root.value == 0 {
		return nil
	}
	scale := float64(o.Width-20) / float64(root.value)
	var out []Frame
	var walk func(n *node, depth int, x float64)
	walk = func(n *node, depth int, x float64) {
		w := float64(n.value) * scale
		if w < o.MinWidth {
			return
		}
		out = append(out, Frame{Name: n.name, Depth: depth, X: x, W: w, Value: n.value})
		names := make([]string, 0, len(n.children))
		for k := range n.children {
			names = append(names, k)
		}
		sort.Strings(names)
		cx := x
		for _, k := range names {
			c := n.children[k]
			walk(c, depth+1, cx)
			cx += float64(c.value) * scale
		}
	}
	walk(root, 0, 10)
	return out
}

func (o Options) defaults() Options {
	if o.Width <= 0 {
		o.Width = 1200
	}
	if o.FrameH <= 0 {
		o.FrameH = 16
	}
	if o.MinWidth <= 0 {
		o.MinWidth = 0.1
	}
	if o.Unit == "" {
		o.Unit = "samples"
	}
	return o
}

// color picks a warm colour from the frame name (stable across runs);
// kernel frames ("_[k]") are orange, Go runtime frames yellowish.
func color(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := h.Sum32()
	r, g, b := 205+int(v%50), int(v/50%130)+60, int(v/6500%55)
	switch {
	case strings.HasSuffix(name, "_[k]"):
		r, g, b = 230, 140+int(v%60), 40
	case strings.HasPrefix(name, "runtime."):
		r, g, b = 220, 190+int(v%40), 60
	}
	return fmt.Sprintf("rgb(%d,%d,%d)", r, g, b)
}

// Render writes f as a standalone SVG flame graph (hover a frame for its
// full name, weight and share; no script needed).
func Render(w io.Writer, f Folded, o Options) error {
	o = o.defaults()
	frames := Layout(f, o)
	maxDepth := 0
	var total int64
	for _, fr := range frames {
		if fr.Depth > maxDepth {
			maxDepth = fr.Depth
		}
		if fr.Depth == 0 {
			total = fr.Value
		}
	}
	top := 40
	height := top + (maxDepth+1)*o.FrameH + 20
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" standalone="no"?>
<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Verdana, sans-serif" font-size="11">
<rect x="0" y="0" width="%d" height="%d" fill="#f8f8f8"/>
<text x="%d" y="22" text-anchor="middle" font-size="16">%s</text>
<text x="10" y="%d" font-size="10" fill="#555">%d %s total; width = share of %s; bottom = root</text>
`, o.Width, height, o.Width, height, o.Width, height, o.Width/2, html.EscapeString(o.Title), height-6, total, o.Unit, o.Unit)
	for _, fr := range frames {
		y := height - 20 - (fr.Depth+1)*o.FrameH
		pct := 100 * float64(fr.Value) / float64(max(total, 1))
		name := html.EscapeString(fr.Name)
		fmt.Fprintf(bw, `<g><title>%s (%d %s, %.2f%%)</title><rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s" rx="2"/>`,
			name, fr.Value, o.Unit, pct, fr.X, y, fr.W, o.FrameH-1, color(fr.Name))
		// ~7 px per character at 11 px Verdana.
		if chars := int((fr.W - 6) / 7); chars >= 3 {
			label := fr.Name
			if len(label) > chars {
				label = label[:chars-2] + ".."
			}
			fmt.Fprintf(bw, `<text x="%.2f" y="%d">%s</text>`, fr.X+3, y+o.FrameH-4, html.EscapeString(label))
		}
		bw.WriteString("</g>\n")
	}
	bw.WriteString("</svg>\n")
	return bw.Flush()
}
