// Command matrixchart turns the records perf/matrix/run collects (one
// perfrun exec JSON line per run, labelled fs, workload, tool, rep,
// guest_bytes) into the matrix's tables and chart:
//
//	matrixchart --in runs.jsonl --outdir DIR [--machine m.json] [--title T] [--note N]...
//
// writes DIR/matrix.md (an overview of time relative to QEMU's best
// configuration and of qbench's defaults relative to the best fixed setting,
// then one table per file system and workload), DIR/matrix.svg
// (one bar chart per file system, time relative to QEMU's best) and
// DIR/matrix.json (every summary). Ratios are taken per interleaved repeat
// (same rep label), then summarised as median (min–max).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/qring/qring/perf/internal/chart"
	"github.com/qring/qring/perf/internal/jsonl"
	"github.com/qring/qring/perf/internal/stats"
)

// Record is the part of a perfrun exec line matrixchart reads.
type Record struct {
	Labels    map[string]string `json:"labels"`
	OK        bool              `json:"ok"`
	Seconds   float64           `json:"seconds"`
	UserS     float64           `json:"user_s"`
	SysS      float64           `json:"sys_s"`
	MachineS  *float64          `json:"machine_s"`
	DevWriteB *int64            `json:"dev_write_b"`
	DevReadB  *int64            `json:"dev_read_b"`
}

// The fixed orders of the matrix; names not listed sort after, as seen.
var (
	toolOrder = []string{"qemu-prealloc", "qemu", "qbench", "qbench-nomerge", "qbench-unwritten", "qbench-zeroes", "qbench-merge-unwritten", "qbench-workers", "qbench-base", "limit", "limit-workers", "fio-floor", "fio-fresh", "fio-zeros"}
	wlOrder   = []string{"seed", "alloc", "scattered", "overwrite", "read"}
	fsOrder   = []string{"ext4", "xfs", "disk"}
)

// The two QEMU configurations every cell is compared with.
const (
	qemuBest    = "qemu-prealloc"
	qemuDefault = "qemu"
	limitTool   = "limit"
	workersTool = "qbench-workers" // another way to drive the engine, not an engine setting
	floorTool   = "fio-floor"
	baseTool    = "qbench-base"
	defaultTool = "qbench"
)

// fixedSetting reports whether tool is qbench at a fixed setting (this
// build, an engine flag pinned: qbench-nomerge, qbench-unwritten, ...), the
// settings the defaults are measured against; qbench-base is another build.
func fixedSetting(tool string) bool {
	return strings.HasPrefix(tool, defaultTool+"-") && tool != baseTool && tool != workersTool
}

var toolDesc = map[string]string{
	"qemu-prealloc":          "qemu-img bench -t none -n over QEMU's preallocate filter (QEMU's best)",
	"qemu":                   "qemu-img bench -f qcow2 -t none -n (QEMU's default qcow2 stack, cache=none, aio=native)",
	"qbench":                 "qbench -t none, defaults (one goroutine through block.Queue, adjacent requests merged, prealloc-fill=auto)",
	"qbench-nomerge":         "qbench -t none -i io_uring-nomerge",
	"qbench-unwritten":       "qbench -t none -i io_uring-nomerge --prealloc-fill unwritten",
	"qbench-zeroes":          "qbench -t none --prealloc-fill zeroes (merging on, zeros streamed ahead whatever the guest does)",
	"qbench-merge-unwritten": "qbench -t none --prealloc-fill unwritten (merging on, no zero fill)",
	"qbench-base":            "another qbench build (QBENCH_BASE_BIN), engine defaults",
	"limit":                  "qbench -f raw -t none -i io_uring-nomerge on a fully written raw file: the device's own cost",
	"qbench-workers":         "qbench -t none --workers: DEPTH goroutines of synchronous requests (before the queue became the default), engine defaults",
	"limit-workers":          "the limit with --workers: qbench -f raw -t none --workers -i io_uring-nomerge on the written raw file",
	"fio-floor":              "fio (C, io_uring, one thread, registered file and buffers, zero buffers) on the limit's written raw file: what a C program costs on the device, the floor a user-space format layer cannot beat",
	"fio-fresh":              "fio-floor's job on a fresh raw file fallocated to 4 GiB (unwritten extents): what a C program pays for first writes into space reserved ahead",
	"fio-zeros":              "fio writing 4 GiB of zeros in 1 MiB requests over a fresh fallocated raw file, whatever the workload: what a C program pays to stream the zero fill",
}

var wlDesc = map[string]string{
	"seed":      "fresh image, -w -S 4k (sequential)",
	"alloc":     "fresh image, -w -S 64k (one 4 KiB request per new cluster)",
	"scattered": "fresh image, -w -S 4k*4099 (each block once, scattered)",
	"overwrite": "-w -S 4k on the image the seed just wrote",
	"read":      "-S 4k read of the written image",
}

// run is one recorded run's figures.
type run struct {
	secs, cpu float64
	machine   float64 // the machine's busy CPU seconds during the run, NaN if unknown
	amp       float64 // device bytes / guest bytes (writes; reads for read), NaN if unknown
}

// Cell is one (file system, workload, tool) cell.
type Cell struct {
	Tool      string `json:"tool"`
	N         int    `json:"runs"`
	Failed    int    `json:"failed"`
	Seconds   sum    `json:"seconds"`
	CPU       sum    `json:"cpu_s"`
	VsQemu    sum    `json:"time_vs_qemu"`
	CPUVsQemu sum    `json:"cpu_vs_qemu"`
	VsBest    sum    `json:"time_vs_qemu_prealloc"`
	CPUVsBest sum    `json:"cpu_vs_qemu_prealloc"`
	// Machine is the machine's busy CPU during the run (perfrun's
	// machine_s): the tool's own plus the kernel work it caused in
	// other threads (file-system workqueues), which getrusage misses.
	Machine       sum   `json:"machine_cpu_s"`
	MachineVsBest sum   `json:"machine_cpu_vs_qemu_prealloc"`
	XLimit        sum   `json:"x_limit"`
	CPUXFloor     sum   `json:"cpu_x_fio_floor"`     // with a fio-floor run only
	VsBase        sum   `json:"time_vs_qbench_base"` // A/B runs (QBENCH_BASE_BIN) only
	Amp           sum   `json:"amplification"`
	GuestBytes    int64 `json:"guest_bytes"`
	byRep         map[string]run

	// qbench (defaults) only: per repeat, time ÷ the smallest time of the
	// fixed settings that ran in it, and the fixed tool that was fastest in
	// the median repeat (both names, "a/b", if an even count's two middle
	// repeats differ).
	VsBestFixed sum    `json:"time_x_best_fixed"`
	BestFixed   string `json:"best_fixed,omitempty"`
	// qbench (defaults) only: the fixed setting with the smallest median
	// time over the repeats qbench ran in, and qbench's time ÷ that
	// setting's, per repeat where both ran (paired: the two ran minutes
	// apart at most). VsBestFixed's per-repeat minimum over several
	// settings favours the fixed side by the noise of every repeat; the
	// minimum of their medians favours it much less.
	VsBestSetting sum    `json:"time_x_best_setting"`
	BestSetting   string `json:"best_setting,omitempty"`
}

// sum is a summary that encodes NaN (no sample) as JSON null.
type sum stats.Summary

func (s sum) Format(dec int) string { return stats.Summary(s).Format(dec) }

func (s sum) MarshalJSON() ([]byte, error) {
	f := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	return json.Marshal(struct {
		N      int      `json:"n"`
		Median *float64 `json:"median"`
		Min    *float64 `json:"min"`
		Max    *float64 `json:"max"`
	}{s.N, f(s.Median), f(s.Min), f(s.Max)})
}

// Block is one (file system, workload) table.
type Block struct {
	FS       string  `json:"fs"`
	Desc     string  `json:"desc"`
	Workload string  `json:"workload"`
	Count    string  `json:"count"`
	Cells    []*Cell `json:"cells"`
}

func main() {
	in := flag.String("in", "", "runs.jsonl from perf/matrix/run")
	outdir := flag.String("outdir", ".", "where matrix.{md,svg,json} go")
	machine := flag.String("machine", "", "machine.json (perfrun machine)")
	title := flag.String("title", "qring vs QEMU: the matrix", "title")
	var notes multi
	flag.Var(&notes, "note", "a line for the notes (repeatable)")
	flag.Parse()
	if *in == "" {
		fmt.Fprintln(os.Stderr, "matrixchart: need --in runs.jsonl")
		os.Exit(2)
	}
	if err := do(*in, *outdir, *machine, *title, notes); err != nil {
		fmt.Fprintln(os.Stderr, "matrixchart:", err)
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, "; ") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func do(in, outdir, machinePath, title string, notes []string) error {
	recs, err := jsonl.Read[Record](in)
	if err != nil {
		return err
	}
	blocks := Build(recs)
	var mach json.RawMessage
	if machinePath != "" {
		if mach, err = os.ReadFile(machinePath); err != nil {
			return err
		}
	}
	var md bytes.Buffer
	WriteMarkdown(&md, title, blocks, notes)
	if err := os.WriteFile(filepath.Join(outdir, "matrix.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, title, blocks); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outdir, "matrix.svg"), svg.Bytes(), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(map[string]any{"title": title, "notes": notes, "machine": mach, "matrix": blocks}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outdir, "matrix.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	os.Stdout.Write(md.Bytes())
	return nil
}

// ordered returns the keys of seen in the order of pref, then the rest in
// the order first seen.
func ordered(seen []string, pref []string) []string {
	in := map[string]bool{}
	for _, s := range seen {
		in[s] = true
	}
	var out []string
	done := map[string]bool{}
	for _, p := range pref {
		if in[p] {
			out = append(out, p)
			done[p] = true
		}
	}
	for _, s := range seen {
		if !done[s] {
			out = append(out, s)
			done[s] = true
		}
	}
	return out
}

// Build groups the records into blocks and computes every summary.
func Build(recs []Record) []*Block {
	type key struct{ fs, wl string }
	var fss, wls, tools []string
	desc := map[string]string{}
	count := map[key]string{}
	cells := map[key]map[string]*Cell{}
	for _, r := range recs {
		fs, wl, tool, rep := r.Labels["fs"], r.Labels["workload"], r.Labels["tool"], r.Labels["rep"]
		k := key{fs, wl}
		if cells[k] == nil {
			cells[k] = map[string]*Cell{}
			count[k] = r.Labels["count"]
		}
		if _, ok := desc[fs]; !ok {
			desc[fs] = r.Labels["desc"]
		}
		fss, wls, tools = append(fss, fs), append(wls, wl), append(tools, tool)
		c := cells[k][tool]
		if c == nil {
			c = &Cell{Tool: tool, byRep: map[string]run{}}
			cells[k][tool] = c
		}
		if !r.OK {
			c.Failed++
			continue
		}
		gb, _ := strconv.ParseInt(r.Labels["guest_bytes"], 10, 64)
		c.GuestBytes = gb
		amp := math.NaN()
		dev := r.DevWriteB
		if wl == "read" {
			dev = r.DevReadB
		}
		if dev != nil && gb > 0 {
			amp = float64(*dev) / float64(gb)
		}
		machine := math.NaN()
		if r.MachineS != nil {
			machine = *r.MachineS
		}
		c.byRep[rep] = run{secs: r.Seconds, cpu: r.UserS + r.SysS, machine: machine, amp: amp}
	}
	var blocks []*Block
	for _, fs := range ordered(fss, fsOrder) {
		for _, wl := range ordered(wls, wlOrder) {
			k := key{fs, wl}
			if cells[k] == nil {
				continue
			}
			b := &Block{FS: fs, Desc: desc[fs], Workload: wl, Count: count[k]}
			for _, tool := range ordered(tools, toolOrder) {
				if c := cells[k][tool]; c != nil {
					summarise(c, cells[k])
					b.Cells = append(b.Cells, c)
				}
			}
			blocks = append(blocks, b)
		}
	}
	return blocks
}

func summarise(c *Cell, peers map[string]*Cell) {
	var secs, cpu, machine, amp []float64
	for _, r := range c.byRep {
		secs, cpu, amp = append(secs, r.secs), append(cpu, r.cpu), append(amp, r.amp)
		if !math.IsNaN(r.machine) {
			machine = append(machine, r.machine)
		}
	}
	c.N = len(c.byRep)
	c.Seconds, c.CPU, c.Amp = sum(stats.Summarize(secs)), sum(stats.Summarize(cpu)), sum(stats.Summarize(amp))
	c.Machine = sum(stats.Summarize(machine))
	ratio := func(other string, f func(run) float64) sum {
		o := peers[other]
		if o == nil {
			return sum(stats.Summarize(nil))
		}
		var xs []float64
		for rep, r := range c.byRep {
			if p, ok := o.byRep[rep]; ok && f(p) > 0 {
				xs = append(xs, f(r)/f(p))
			}
		}
		return sum(stats.Summarize(xs))
	}
	t := func(r run) float64 { return r.secs }
	u := func(r run) float64 { return r.cpu }
	c.VsQemu, c.CPUVsQemu = ratio(qemuDefault, t), ratio(qemuDefault, u)
	c.VsBest, c.CPUVsBest = ratio(qemuBest, t), ratio(qemuBest, u)
	c.MachineVsBest = ratio(qemuBest, func(r run) float64 {
		if math.IsNaN(r.machine) {
			return 0
		}
		return r.machine
	})
	c.XLimit = ratio(limitTool, t)
	c.CPUXFloor = ratio(floorTool, u)
	c.VsBase = ratio(baseTool, t)
	c.VsBestFixed, c.VsBestSetting = sum(stats.Summarize(nil)), sum(stats.Summarize(nil))
	if c.Tool == defaultTool {
		c.VsBestFixed, c.BestFixed = vsBestFixed(c, peers)
		if c.BestSetting = bestSetting(c, peers); c.BestSetting != "" {
			c.VsBestSetting = ratio(c.BestSetting, t)
		}
	}
}

// bestSetting is the fixed-setting tool (fixedSetting) with the smallest
// median time over the repeats in which c ran too (so that the ratio is
// taken over the repeats the choice was made on); ties go to the
// alphabetically first name.
func bestSetting(c *Cell, peers map[string]*Cell) string {
	best, name := math.Inf(1), ""
	for tool, p := range peers {
		if !fixedSetting(tool) {
			continue
		}
		var xs []float64
		for rep, r := range p.byRep {
			if _, ok := c.byRep[rep]; ok && r.secs > 0 {
				xs = append(xs, r.secs)
			}
		}
		if len(xs) == 0 {
			continue
		}
		if m := stats.Summarize(xs).Median; m < best || m == best && tool < name {
			best, name = m, tool
		}
	}
	return name
}

// vsBestFixed divides c's time, per repeat, by the smallest time among the
// fixed-setting tools (fixedSetting) that ran in that repeat, and names the
// fixed tool that was fastest in the median repeat.
func vsBestFixed(c *Cell, peers map[string]*Cell) (sum, string) {
	type point struct {
		x    float64
		best string
	}
	var pts []point
	for rep, r := range c.byRep {
		best, name := math.Inf(1), ""
		for tool, p := range peers {
			if !fixedSetting(tool) {
				continue
			}
			if pr, ok := p.byRep[rep]; ok && pr.secs > 0 && (pr.secs < best || pr.secs == best && tool < name) {
				best, name = pr.secs, tool
			}
		}
		if name != "" {
			pts = append(pts, point{r.secs / best, name})
		}
	}
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].x != pts[j].x {
			return pts[i].x < pts[j].x
		}
		return pts[i].best < pts[j].best
	})
	xs := make([]float64, len(pts))
	for i, p := range pts {
		xs[i] = p.x
	}
	name := ""
	if n := len(pts); n > 0 {
		name = pts[n/2].best
		if lo := pts[(n-1)/2].best; lo != name {
			name = lo + "/" + name
		}
	}
	return sum(stats.Summarize(xs)), name
}

// WriteMarkdown writes the overview and the per-cell tables.
func WriteMarkdown(w io.Writer, title string, blocks []*Block, notes []string) {
	fmt.Fprintf(w, "# %s\n\n", title)
	fmt.Fprintln(w, "Generated by `perf/matrix/run` (`make perf-matrix`). Times are each tool's own \"Run completed in\" (fio: the job's `job_runtime`); CPU is the process's user+sys (getrusage); machine CPU (when recorded) is the whole machine's busy time during the run (/proc/stat), which also counts the kernel work the tool caused in other threads, such as a file system converting unwritten extents in its workqueue;",
		"ratios are per interleaved repeat, then median (min–max); below 1 means faster or less CPU than the QEMU configuration.",
		"Amplification: bytes the block device was sent to write (for read: to read) over guest bytes, after `sync -f`.")
	fmt.Fprintln(w)
	tools := map[string]bool{}
	var toolSeen []string
	for _, b := range blocks {
		for _, c := range b.Cells {
			if !tools[c.Tool] {
				tools[c.Tool] = true
				toolSeen = append(toolSeen, c.Tool)
			}
		}
	}
	toolList := ordered(toolSeen, toolOrder)
	fmt.Fprintln(w, "| tool | what |\n|---|---|")
	for _, t := range toolList {
		fmt.Fprintf(w, "| %s | %s |\n", t, toolDesc[t])
	}
	fmt.Fprintln(w, "\n| workload | what (4 KiB requests, depth 64, -t none, 4 GiB qcow2, 64 KiB clusters) |\n|---|---|")
	seenWl := map[string]bool{}
	for _, b := range blocks {
		if !seenWl[b.Workload] {
			seenWl[b.Workload] = true
			fmt.Fprintf(w, "| %s | %s, %s requests |\n", b.Workload, wlDesc[b.Workload], b.Count)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	fmt.Fprintln(w, "\n## Overview: time relative to QEMU's best (qemu-img bench + preallocate filter), median of the per-repeat ratios")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| file system | workload |")
	for _, t := range toolList {
		fmt.Fprintf(w, " %s |", t)
	}
	fmt.Fprint(w, "\n|---|---|")
	for range toolList {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, b := range blocks {
		fmt.Fprintf(w, "| %s | %s |", b.FS, b.Workload)
		byTool := map[string]*Cell{}
		for _, c := range b.Cells {
			byTool[c.Tool] = c
		}
		for _, t := range toolList {
			c := byTool[t]
			switch {
			case c == nil || c.N == 0:
				fmt.Fprint(w, " – |")
			case c.VsBest.N == 0:
				fmt.Fprintf(w, " %s s |", fmtF(c.Seconds.Median, 3))
			default:
				fmt.Fprintf(w, " %s (%s s) |", fmtF(c.VsBest.Median, 2), fmtF(c.Seconds.Median, 3))
			}
		}
		fmt.Fprintln(w)
	}
	writeBestFixed(w, blocks, toolList)
	fs := ""
	for _, b := range blocks {
		if b.FS != fs {
			fs = b.FS
			fmt.Fprintf(w, "\n## %s: %s\n", fs, b.Desc)
		}
		fmt.Fprintf(w, "\n### %s / %s (%s requests)\n\n", b.FS, b.Workload, b.Count)
		ampName := "write ampl."
		if b.Workload == "read" {
			ampName = "read ampl."
		}
		ab, floor, fixed, mach := false, false, false, false
		for _, c := range b.Cells {
			mach = mach || c.Machine.N > 0
			ab = ab || c.Tool == baseTool
			floor = floor || c.Tool == floorTool
			fixed = fixed || c.Tool == defaultTool && c.VsBestFixed.N > 0
		}
		fixedHead, floorHead, abHead, machHead, sep := "", "", "", "", ""
		if mach {
			machHead, sep = " machine CPU s | machine CPU ÷ qemu-prealloc |", sep+"---|---|"
		}
		if fixed {
			fixedHead, sep = " ÷ best fixed |", sep+"---|"
		}
		if floor {
			floorHead, sep = " CPU × fio-floor |", sep+"---|"
		}
		if ab {
			abHead, sep = " time ÷ qbench-base |", sep+"---|"
		}
		fmt.Fprintf(w, "| tool | time s | CPU s | time ÷ qemu | CPU ÷ qemu | time ÷ qemu-prealloc | CPU ÷ qemu-prealloc | × limit |%s%s%s %s |%s\n", fixedHead, floorHead, machHead, ampName, abHead)
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|"+sep)
		for _, c := range b.Cells {
			name := c.Tool
			if c.Failed > 0 {
				name += fmt.Sprintf(" (%d failed)", c.Failed)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |", name,
				c.Seconds.Format(3), c.CPU.Format(2), c.VsQemu.Format(2), c.CPUVsQemu.Format(2),
				c.VsBest.Format(2), c.CPUVsBest.Format(2), c.XLimit.Format(2))
			if fixed {
				fmt.Fprintf(w, " %s |", c.VsBestFixed.Format(2))
			}
			if floor {
				fmt.Fprintf(w, " %s |", c.CPUXFloor.Format(2))
			}
			if mach {
				fmt.Fprintf(w, " %s | %s |", c.Machine.Format(2), c.MachineVsBest.Format(2))
			}
			fmt.Fprintf(w, " %s |", c.Amp.Format(2))
			if ab {
				fmt.Fprintf(w, " %s |", c.VsBase.Format(2))
			}
			fmt.Fprintln(w)
		}
	}
}

// writeBestFixed writes the overview of qbench's defaults against the best
// fixed setting of each repeat, for the blocks where one ran with qbench.
func writeBestFixed(w io.Writer, blocks []*Block, toolList []string) {
	var rows []string
	for _, b := range blocks {
		for _, c := range b.Cells {
			if c.Tool == defaultTool && c.VsBestFixed.N > 0 {
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s |", b.FS, b.Workload,
					c.VsBestSetting.Format(2), c.BestSetting, c.VsBestFixed.Format(2), c.BestFixed))
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	var fixed []string
	for _, t := range toolList {
		if fixedSetting(t) {
			fixed = append(fixed, t)
		}
	}
	fmt.Fprintf(w, "\n## Overview: qbench's defaults ÷ the best fixed setting (%s)\n\n", strings.Join(fixed, ", "))
	fmt.Fprintln(w, "The default should be at least as fast as the best fixed setting within 5 % (≤ 1.05).",
		"Best setting: the fixed setting with the smallest median time; qbench's time over its time per interleaved repeat, median (min–max).",
		"Per-repeat minimum: qbench's time over the smallest time among the fixed settings that ran in each repeat, median (min–max), and the fastest fixed setting in the median repeat;",
		"a minimum over several noisy settings in every repeat favours the fixed side by the noise alone (identical configurations score above 1); the minimum of their medians much less.")
	fmt.Fprintln(w, "\n| file system | workload | qbench ÷ best setting | best setting | qbench ÷ per-repeat minimum | fastest in the median repeat |\n|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
}

func fmtF(x float64, dec int) string {
	if math.IsNaN(x) {
		return "–"
	}
	return strconv.FormatFloat(x, 'f', dec, 64)
}

// WriteSVG draws one grouped bar chart per file system (groups: workloads,
// bars: tools, heights relative to QEMU's best), stacked in one SVG.
func WriteSVG(w io.Writer, title string, blocks []*Block) error {
	var parts [][]byte
	var fsList []string
	groups := map[string][]chart.Group{}
	for _, b := range blocks {
		if _, ok := groups[b.FS]; !ok {
			fsList = append(fsList, b.FS)
		}
		g := chart.Group{Label: b.Workload, Note: b.Count + " req"}
		// The chart scales each group to its first bar: put QEMU's best
		// first (a group without it is drawn empty rather than misscaled).
		var best *Cell
		for _, c := range b.Cells {
			if c.Tool == qemuBest {
				best = c
			}
		}
		if best != nil {
			g.Bars = append(g.Bars, bar(best))
			for _, c := range b.Cells {
				if c != best {
					g.Bars = append(g.Bars, bar(c))
				}
			}
		}
		groups[b.FS] = append(groups[b.FS], g)
	}
	width, height := 0, 0
	for _, fs := range fsList {
		var buf bytes.Buffer
		desc := fs
		for _, b := range blocks {
			if b.FS == fs {
				desc = fs + ": " + b.Desc + "; bars: time relative to " + qemuBest
				break
			}
		}
		if err := chart.Render(&buf, desc, groups[fs]); err != nil {
			return err
		}
		svg := buf.Bytes()
		if i := bytes.Index(svg, []byte("<svg")); i >= 0 {
			svg = svg[i:]
		}
		pw, ph := svgSize(svg)
		svg = bytes.Replace(svg, []byte("<svg "), []byte(fmt.Sprintf(`<svg y="%d" `, 40+height)), 1)
		parts = append(parts, svg)
		width = max(width, pw)
		height += ph
	}
	fmt.Fprintf(w, `<?xml version="1.0" standalone="no"?>
<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="Verdana, sans-serif">
<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="26" text-anchor="middle" font-size="16">%s</text>
`, width, height+40, width/2, html.EscapeString(title))
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "</svg>\n")
	return err
}

func bar(c *Cell) chart.Bar {
	return chart.Bar{Label: c.Tool, Median: c.Seconds.Median, Min: c.Seconds.Min, Max: c.Seconds.Max}
}

// svgSize reads the width and height attributes of an <svg> element.
func svgSize(svg []byte) (int, int) {
	attr := func(name string) int {
		i := bytes.Index(svg, []byte(name+`="`))
		if i < 0 {
			return 0
		}
		rest := svg[i+len(name)+2:]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			return 0
		}
		f, _ := strconv.ParseFloat(string(rest[:j]), 64)
		return int(math.Ceil(f))
	}
	return attr(" width"), attr(" height")
}
