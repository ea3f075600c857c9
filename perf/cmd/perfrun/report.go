package main

import (
	"encoding/json"
	"flag"
	"fmt"
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

// group collects the ok records of one (device, key) cell.
type cell struct {
	secs, cpu, model []float64
	byRep            map[string]Record
	failed           int
}

type table struct {
	devices []string
	keys    []string
	cells   map[[2]string]*cell
	labels  map[string]map[string]string // device -> labels of its first record
}

func collect(recs []Record, keyLabel string, keyOrder []string) *table {
	t := &table{cells: map[[2]string]*cell{}, labels: map[string]map[string]string{}}
	seenKey := map[string]bool{}
	for _, r := range recs {
		d, k := r.Labels["device"], r.Labels[keyLabel]
		if _, ok := t.labels[d]; !ok {
			t.devices = append(t.devices, d)
			t.labels[d] = r.Labels
		}
		seenKey[k] = true
		c := t.cells[[2]string{d, k}]
		if c == nil {
			c = &cell{byRep: map[string]Record{}}
			t.cells[[2]string{d, k}] = c
		}
		if !r.OK {
			c.failed++
			continue
		}
		c.secs = append(c.secs, r.Seconds)
		c.cpu = append(c.cpu, r.UserS+r.SysS)
		if r.ModelS > 0 {
			c.model = append(c.model, r.ModelS)
		}
		c.byRep[r.Labels["rep"]] = r
	}
	for _, k := range keyOrder {
		if seenKey[k] {
			t.keys = append(t.keys, k)
			delete(seenKey, k)
		}
	}
	var rest []string
	for k := range seenKey {
		rest = append(rest, k)
	}
	sort.Strings(rest)
	t.keys = append(t.keys, rest...)
	return t
}

func (t *table) get(d, k string) *cell {
	if c := t.cells[[2]string{d, k}]; c != nil {
		return c
	}
	return &cell{byRep: map[string]Record{}}
}

func fmtCount(s string) string {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return s
	}
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMi", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dKi", n>>10)
	}
	return s
}

func fmtGain(g float64) string {
	if math.IsNaN(g) {
		return "–"
	}
	return fmt.Sprintf("%+.0f %%", g)
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f", r)
}

var variantNames = map[string]string{
	"before":  "before (prealloc=off: zero buffers merged with the data, QEMU before c8bb23cbdb)",
	"after":   "after (prealloc=on, the engine default: space reserved ahead in large chunks, filled per device by prealloc-fill=auto)",
	"cluster": "per-cluster (prealloc=on, prealloc-size=0: one efficient zeroing per new cluster, QEMU c8bb23cbdb as is)",
}

type seedSummary struct {
	Device  string                   `json:"device"`
	Desc    string                   `json:"desc"`
	Count   string                   `json:"requests"`
	Seconds map[string]stats.Summary `json:"seconds"`
	CPU     map[string]stats.Summary `json:"cpu_s"`
	Model   map[string]stats.Summary `json:"model_s,omitempty"`
	Gain    map[string]float64       `json:"gain_pct"`
	Failed  map[string]int           `json:"failed,omitempty"`
}

func reportFlags(name string, args []string) (in, outdir, mach, title string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&in, "in", "", "runs (JSON lines from perfrun exec)")
	fs.StringVar(&outdir, "outdir", "", "output directory")
	fs.StringVar(&mach, "machine", "", "machine info JSON (perfrun machine)")
	fs.StringVar(&title, "title", "", "title")
	if err = fs.Parse(args); err != nil {
		return
	}
	if in == "" || outdir == "" {
		err = fmt.Errorf("%s: need --in and --outdir", name)
	}
	return
}

func seedTable(args []string) error {
	in, outdir, mach, title, err := reportFlags("seed-table", args)
	if err != nil {
		return err
	}
	if title == "" {
		title = "Seed benchmark: cluster preallocation before/after"
	}
	recs, err := jsonl.Read[Record](in)
	if err != nil {
		return err
	}
	t := collect(recs, "variant", []string{"before", "after", "cluster"})
	var sums []seedSummary
	var groups []chart.Group
	var md strings.Builder
	fmt.Fprintf(&md, "### %s\n\n", title)
	md.WriteString("Seconds (qemu-img bench's \"Run completed in\" time): median (min–max) of the interleaved repeats; gain = (before − x) / before on the medians, as in the seed.\n\n")
	hdr := "| file | requests |"
	sep := "|---|---|"
	for _, k := range t.keys {
		if k == "before" {
			hdr += " before |"
			sep += "---|"
			continue
		}
		hdr += fmt.Sprintf(" %s | gain |", barLabel(k))
		sep += "---|---|"
	}
	md.WriteString(hdr + "\n" + sep + "\n")
	hasModel := false
	for _, d := range t.devices {
		l := t.labels[d]
		s := seedSummary{Device: d, Desc: l["desc"], Count: l["count"], Seconds: map[string]stats.Summary{},
			CPU: map[string]stats.Summary{}, Model: map[string]stats.Summary{}, Gain: map[string]float64{}, Failed: map[string]int{}}
		row := fmt.Sprintf("| %s | %s |", d, fmtCount(l["count"]))
		g := chart.Group{Label: d, Note: fmtCount(l["count"]) + " req"}
		before := stats.Summarize(t.get(d, "before").secs)
		for _, k := range t.keys {
			c := t.get(d, k)
			sm := stats.Summarize(c.secs)
			s.Seconds[k] = sm
			s.CPU[k] = stats.Summarize(c.cpu)
			if len(c.model) > 0 {
				s.Model[k] = stats.Summarize(c.model)
				hasModel = true
			}
			if c.failed > 0 {
				s.Failed[k] = c.failed
			}
			cellText := sm.Format(3)
			if c.failed > 0 {
				cellText += fmt.Sprintf(" [%d failed]", c.failed)
			}
			if k == "before" {
				row += " " + cellText + " |"
			} else {
				gain := stats.Gain(before.Median, sm.Median)
				s.Gain[k] = gain
				row += fmt.Sprintf(" %s | %s |", cellText, fmtGain(gain))
			}
			g.Bars = append(g.Bars, chart.Bar{Label: barLabel(k), Median: sm.Median, Min: sm.Min, Max: sm.Max})
		}
		md.WriteString(row + "\n")
		sums = append(sums, s)
		groups = append(groups, g)
	}
	md.WriteString("\nColumns: " + strings.Join(func() []string {
		var v []string
		for _, k := range t.keys {
			if n, ok := variantNames[k]; ok {
				v = append(v, n)
			} else {
				v = append(v, k)
			}
		}
		return v
	}(), "; ") + ".\n")
	if hasModel {
		md.WriteString("\nLatency-model rows, sum of modelled device costs (latdev Stats.Modelled, seconds; with one op in service at a time, as the HDD model, this is the device's busy time, a noise-free lower bound of the run time):\n\n")
		md.WriteString("| file | " + strings.Join(t.keys, " | ") + " |\n|---|" + strings.Repeat("---|", len(t.keys)) + "\n")
		for _, s := range sums {
			if len(s.Model) == 0 {
				continue
			}
			row := "| " + s.Device + " |"
			for _, k := range t.keys {
				row += " " + s.Model[k].Format(3) + " |"
			}
			md.WriteString(row + "\n")
		}
	}
	md.WriteString("\nCPU seconds of the benchmark process (user+sys, median):\n\n")
	md.WriteString("| file | " + strings.Join(t.keys, " | ") + " |\n|---|" + strings.Repeat("---|", len(t.keys)) + "\n")
	for _, s := range sums {
		row := "| " + s.Device + " |"
		for _, k := range t.keys {
			row += fmt.Sprintf(" %.2f |", s.CPU[k].Median)
		}
		md.WriteString(row + "\n")
	}
	md.WriteString("\nDevices:\n\n")
	for _, s := range sums {
		fmt.Fprintf(&md, "- **%s**: %s\n", s.Device, s.Desc)
	}
	return publish(outdir, "seed-table", md.String(), mach, map[string]any{"summary": sums}, recs, func(w io.Writer) error {
		return chart.Render(w, title, groups)
	})
}

func barLabel(k string) string {
	switch k {
	case "before":
		return "before (off)"
	case "after":
		return "after (on)"
	case "cluster":
		return "per-cluster"
	}
	return k
}

// publish writes NAME.md, NAME.json (machine, summary, every run) and, if
// svg is set, NAME.svg into outdir, and prints the markdown.
func publish(outdir, name, md, mach string, summary map[string]any, recs []Record, svg func(io.Writer) error) error {
	if err := os.MkdirAll(outdir, 0o755); err != nil {
		return err
	}
	m, err := readMachine(mach)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outdir, name+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	obj := map[string]any{"machine": m, "runs": recs}
	for k, v := range summary {
		obj[k] = v
	}
	if err := writeFile(filepath.Join(outdir, name+".json"), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return enc.Encode(obj)
	}); err != nil {
		return err
	}
	if svg != nil {
		if err := writeFile(filepath.Join(outdir, name+".svg"), svg); err != nil {
			return err
		}
	}
	fmt.Print(md)
	return nil
}

var toolNames = map[string]string{
	"qbench":        "qbench (qring, io_uring, default engine options)",
	"qemu-native":   "qemu-img bench -n (linux-aio), qcow2",
	"qemu-io_uring": "qemu-img bench -i io_uring, qcow2",
	"qemu-raw":      "qemu-img bench -n, raw (upper bound for a format layer)",
}

type ratioSummary struct {
	Device string        `json:"device"`
	Versus string        `json:"versus"`
	Time   stats.Summary `json:"time_ratio"`
	CPU    stats.Summary `json:"cpu_ratio"`
	Pairs  int           `json:"pairs"`
}

func vsQemu(args []string) error {
	in, outdir, mach, title, err := reportFlags("vs-qemu", args)
	if err != nil {
		return err
	}
	if title == "" {
		title = "qbench vs qemu-img bench"
	}
	recs, err := jsonl.Read[Record](in)
	if err != nil {
		return err
	}
	t := collect(recs, "tool", []string{"qbench", "qemu-native", "qemu-io_uring", "qemu-raw"})
	var md strings.Builder
	fmt.Fprintf(&md, "### %s\n\n", title)
	md.WriteString("Each tool's own run time (first submission to last completion) and the CPU seconds of its process (user+sys, from getrusage): median (min–max).\n\n")
	md.WriteString("| device | tool | requests | time s | IOPS (median) | CPU s |\n|---|---|---|---|---|---|\n")
	type row struct {
		Device, Tool string
		Time, CPU    stats.Summary
		Failed       int
	}
	var rows []row
	for _, d := range t.devices {
		for _, k := range t.keys {
			c := t.get(d, k)
			if len(c.secs) == 0 && c.failed == 0 {
				continue
			}
			ts, cs := stats.Summarize(c.secs), stats.Summarize(c.cpu)
			rows = append(rows, row{d, k, ts, cs, c.failed})
			n, _ := strconv.ParseFloat(t.labels[d]["count"], 64)
			iops := "–"
			if ts.N > 0 && n > 0 {
				iops = fmt.Sprintf("%.1fk", n/ts.Median/1000)
			}
			f := ""
			if c.failed > 0 {
				f = fmt.Sprintf(" [%d failed]", c.failed)
			}
			fmt.Fprintf(&md, "| %s | %s | %s | %s%s | %s | %s |\n", d, k, fmtCount(t.labels[d]["count"]), ts.Format(3), f, iops, cs.Format(2))
		}
	}
	md.WriteString("\nRatios qbench / qemu-img, per interleaved pair (same repeat), median (min–max); below 1 means qbench is faster or uses less CPU:\n\n")
	md.WriteString("| device | versus | pairs | time ratio | CPU ratio |\n|---|---|---|---|---|\n")
	var ratios []ratioSummary
	for _, d := range t.devices {
		q := t.get(d, "qbench")
		for _, k := range t.keys {
			if k == "qbench" {
				continue
			}
			o := t.get(d, k)
			var tr, cr []float64
			for rep, a := range q.byRep {
				if b, ok := o.byRep[rep]; ok && b.Seconds > 0 {
					tr = append(tr, a.Seconds/b.Seconds)
					if c := b.UserS + b.SysS; c > 0 {
						cr = append(cr, (a.UserS+a.SysS)/c)
					}
				}
			}
			r := ratioSummary{Device: d, Versus: k, Time: stats.Summarize(tr), CPU: stats.Summarize(cr), Pairs: len(tr)}
			ratios = append(ratios, r)
			fmt.Fprintf(&md, "| %s | %s | %d | %s | %s |\n", d, k, r.Pairs, r.Time.Format(2), r.CPU.Format(2))
		}
	}
	md.WriteString("\nTools: ")
	var tn []string
	for _, k := range t.keys {
		if n, ok := toolNames[k]; ok {
			tn = append(tn, k+" = "+n)
		}
	}
	md.WriteString(strings.Join(tn, "; ") + ".\n\nDevices:\n\n")
	for _, d := range t.devices {
		fmt.Fprintf(&md, "- **%s**: %s\n", d, t.labels[d]["desc"])
	}
	return publish(outdir, "vs-qemu", md.String(), mach, map[string]any{"summary": rows, "ratios": ratios}, recs, nil)
}
