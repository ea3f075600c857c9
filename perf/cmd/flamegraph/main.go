// Command flamegraph renders an SVG flame graph from a pprof profile, from
// `perf script` output, or from folded stacks, with no external tools.
//
//	flamegraph -pprof cpu.pprof -o flame.svg
//	perf script -i perf.data | flamegraph -perf-script - -o flame.svg
//	flamegraph -folded stacks.txt -o flame.svg [-fold-out stacks.txt]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/qring/qring/perf/internal/flame"
)

func main() {
	var (
		pprofIn  = flag.String("pprof", "", "pprof profile to render")
		perfIn   = flag.String("perf-script", "", "`perf script` output to fold and render (- for stdin)")
		foldedIn = flag.String("folded", "", "folded stacks to render (- for stdin)")
		out      = flag.String("o", "flame.svg", "output SVG")
		foldOut  = flag.String("fold-out", "", "also write the folded stacks here")
		title    = flag.String("title", "", "graph title")
		width    = flag.Int("width", 1600, "width in pixels")
		require  = flag.String("require", "", "fail unless a frame name contains this string")
	)
	flag.Parse()
	if err := run(*pprofIn, *perfIn, *foldedIn, *out, *foldOut, *title, *width, *require); err != nil {
		fmt.Fprintln(os.Stderr, "flamegraph:", err)
		os.Exit(1)
	}
}

func open(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	return os.Open(name)
}

func run(pprofIn, perfIn, foldedIn, out, foldOut, title string, width int, require string) error {
	var (
		f    flame.Folded
		unit = "samples"
		src  string
		err  error
	)
	switch {
	case pprofIn != "":
		src = pprofIn
		r, err := open(pprofIn)
		if err != nil {
			return err
		}
		defer r.Close()
		f, unit, err = flame.FoldPprof(r, -1)
		if err != nil {
			return err
		}
	case perfIn != "":
		src = perfIn
		r, err := open(perfIn)
		if err != nil {
			return err
		}
		defer r.Close()
		if f, err = flame.FoldPerfScript(r); err != nil {
			return err
		}
	case foldedIn != "":
		src = foldedIn
		r, err := open(foldedIn)
		if err != nil {
			return err
		}
		defer r.Close()
		if f, err = flame.ParseFolded(r); err != nil {
			return err
		}
	default:
		return fmt.Errorf("need -pprof, -perf-script or -folded")
	}
	if len(f) == 0 {
		return fmt.Errorf("%s: no samples", src)
	}
	if require != "" {
		found := false
		for st := range f {
			if containsFrame(st, require) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: no frame contains %q", src, require)
		}
	}
	if foldOut != "" {
		fo, err := os.Create(foldOut)
		if err != nil {
			return err
		}
		if err := f.Write(fo); err != nil {
			fo.Close()
			return err
		}
		if err := fo.Close(); err != nil {
			return err
		}
	}
	if title == "" {
		title = "Flame graph: " + src
	}
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if err = flame.Render(w, f, flame.Options{Title: title, Width: width, Unit: unit}); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func containsFrame(stack, s string) bool {
	return strings.Contains(stack, s)
}
