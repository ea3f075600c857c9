package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

func rec(fs, wl, tool, rep string, secs, cpu float64, devW int64) Record {
	return Record{
		Labels:  map[string]string{"fs": fs, "workload": wl, "tool": tool, "rep": rep, "count": "4", "guest_bytes": "1000"},
		OK:      true,
		Seconds: secs, UserS: cpu, DevWriteB: &devW,
	}
}

func TestBuild_RatiosPerRepeat(t *testing.T) {
	recs := []Record{
		rec("ext4", "seed", "qbench", "1", 1, 1, 2000),
		rec("ext4", "seed", "qemu-prealloc", "1", 2, 4, 1000),
		rec("ext4", "seed", "qemu", "1", 4, 4, 1000),
		rec("ext4", "seed", "limit", "1", 0.5, 1, 1000),
		rec("ext4", "seed", "qbench", "2", 3, 1, 1000),
		rec("ext4", "seed", "qemu-prealloc", "2", 3, 2, 1000),
		rec("ext4", "seed", "qemu", "2", 6, 2, 1000),
		rec("ext4", "seed", "limit", "2", 1, 1, 1000),
		{Labels: map[string]string{"fs": "ext4", "workload": "seed", "tool": "qbench", "rep": "3"}},
	}
	blocks := Build(recs)
	if len(blocks) != 1 {
		t.Fatalf("blocks = %d, want 1", len(blocks))
	}
	b := blocks[0]
	var got []string
	for _, c := range b.Cells {
		got = append(got, c.Tool)
	}
	if strings.Join(got, ",") != "qemu-prealloc,qemu,qbench,limit" {
		t.Fatalf("tool order %v", got)
	}
	q := b.Cells[2]
	// Per repeat: 1/2 and 3/3, so median 0.75, min 0.5, max 1.
	if q.VsBest.Median != 0.75 || q.VsBest.Min != 0.5 || q.VsBest.Max != 1 {
		t.Errorf("time vs best = %+v", q.VsBest)
	}
	if q.VsQemu.Median != 0.375 {
		t.Errorf("time vs qemu = %+v", q.VsQemu)
	}
	if q.CPUVsBest.Median != (0.25+0.5)/2 {
		t.Errorf("cpu vs best = %+v", q.CPUVsBest)
	}
	if q.XLimit.Median != 2.5 {
		t.Errorf("x limit = %+v", q.XLimit)
	}
	if q.Amp.Median != 1.5 || q.Amp.Max != 2 {
		t.Errorf("amplification = %+v", q.Amp)
	}
	if q.Failed != 1 || q.N != 2 {
		t.Errorf("runs %d failed %d, want 2 and 1", q.N, q.Failed)
	}
}

func TestBuild_ReadUsesDeviceReads(t *testing.T) {
	r := rec("xfs", "read", "qbench", "1", 1, 1, 0)
	rd := int64(1030)
	r.DevReadB = &rd
	c := Build([]Record{r})[0].Cells[0]
	if c.Amp.Median != 1.03 {
		t.Errorf("read amplification = %v, want 1.03", c.Amp.Median)
	}
	if !math.IsNaN(c.VsBest.Median) {
		t.Errorf("ratio without qemu-prealloc = %v, want NaN", c.VsBest.Median)
	}
	js, err := json.Marshal(c)
	if err != nil || !strings.Contains(string(js), `"time_vs_qemu_prealloc":{"n":0,"median":null,"min":null,"max":null}`) {
		t.Errorf("json %s, %v", js, err)
	}
}

func TestWrite_MarkdownAndWellFormedSVG(t *testing.T) {
	recs := []Record{
		rec("ext4", "seed", "qbench", "1", 1, 1, 2000),
		rec("ext4", "seed", "qemu-prealloc", "1", 2, 4, 1000),
		rec("disk", "alloc", "qbench", "1", 1, 1, 2000),
		rec("disk", "alloc", "qbench-base", "1", 4, 1, 2000),
	}
	blocks := Build(recs)
	markdownHas(t, "t <&>", blocks, []string{"a note"},
		"| ext4 | seed | 1.00 (2.000 s) | 0.50 (1.000 s) |", "### disk / alloc", "- a note", "| × limit | write ampl. | time ÷ qbench-base |", " | 0.25 |\n")
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "t <&>", blocks); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&svg)
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("svg not well-formed: %v", err)
		}
	}
}

func TestWriteMarkdown_FloorColumn(t *testing.T) {
	recs := []Record{
		rec("ext4", "overwrite", "qemu-prealloc", "1", 2, 4, 1000),
		rec("ext4", "overwrite", "qbench-nomerge", "1", 1, 3, 1000),
		rec("ext4", "overwrite", "limit", "1", 1, 3, 1000),
		rec("ext4", "overwrite", "fio-floor", "1", 0.8, 2, 1000),
	}
	blocks := Build(recs)
	var got []string
	for _, c := range blocks[0].Cells {
		got = append(got, c.Tool)
	}
	if strings.Join(got, ",") != "qemu-prealloc,qbench-nomerge,limit,fio-floor" {
		t.Fatalf("tool order %v", got)
	}
	if c := blocks[0].Cells[1]; c.CPUXFloor.Median != 1.5 {
		t.Errorf("cpu x floor = %+v, want 1.5", c.CPUXFloor)
	}
	markdownHas(t, "t", blocks, nil,
		"| × limit | CPU × fio-floor | write ampl. |\n|---|---|---|---|---|---|---|---|---|---|\n",
		"| fio-floor | 0.800 | 2.00 | – | – | 0.40 | 0.50 | 0.80 | 1.00 | 1.00 |",
		"| qbench-nomerge | 1.000 | 3.00 | – | – | 0.50 | 0.75 | 1.00 | 1.50 | 1.00 |",
	)
}

func TestBuild_VsBestFixedPerRepeat(t *testing.T) {
	recs := []Record{
		// Repeat 1: nomerge is the best fixed setting; qbench-base (another
		// build) is faster still but is no fixed setting.
		rec("xfs", "alloc", "qbench", "1", 1.2, 1, 1000),
		rec("xfs", "alloc", "qbench-nomerge", "1", 1, 1, 1000),
		rec("xfs", "alloc", "qbench-unwritten", "1", 1.5, 1, 1000),
		rec("xfs", "alloc", "qbench-base", "1", 0.1, 1, 1000),
		rec("xfs", "alloc", "qemu-prealloc", "1", 2, 1, 1000),
		// Repeat 2: unwritten is the best.
		rec("xfs", "alloc", "qbench", "2", 0.9, 1, 1000),
		rec("xfs", "alloc", "qbench-nomerge", "2", 2.4, 1, 1000),
		rec("xfs", "alloc", "qbench-unwritten", "2", 1, 1, 1000),
		rec("xfs", "alloc", "qbench-base", "2", 0.1, 1, 1000),
		rec("xfs", "alloc", "qemu-prealloc", "2", 2, 1, 1000),
		// Repeat 3: only unwritten ran (nomerge failed).
		rec("xfs", "alloc", "qbench", "3", 2, 1, 1000),
		rec("xfs", "alloc", "qbench-unwritten", "3", 2.5, 1, 1000),
		{Labels: map[string]string{"fs": "xfs", "workload": "alloc", "tool": "qbench-nomerge", "rep": "3"}},
		// Repeat 4: no fixed setting ran; not counted.
		rec("xfs", "alloc", "qbench", "4", 9, 1, 1000),
		// A block without a fixed setting gets no column.
		rec("xfs", "read", "qbench", "1", 1, 1, 1000),
		rec("xfs", "read", "qbench-base", "1", 1, 1, 1000),
	}
	blocks := Build(recs)
	cells := map[string]*Cell{}
	for _, c := range blocks[0].Cells {
		cells[c.Tool] = c
	}
	q := cells["qbench"]
	// Per repeat: 1.2/1 (nomerge), 0.9/1 (unwritten), 2/2.5 (unwritten):
	// median 0.9, repeat 2's, whose best fixed setting is unwritten.
	if s := q.VsBestFixed; s.N != 3 || s.Median != 0.9 || s.Min != 0.8 || s.Max != 1.2 {
		t.Errorf("time x best fixed = %+v, want n 3, 0.9 (0.8–1.2)", s)
	}
	if q.BestFixed != "qbench-unwritten" {
		t.Errorf("best fixed = %q, want qbench-unwritten", q.BestFixed)
	}
	for _, tool := range []string{"qbench-nomerge", "qbench-unwritten", "qbench-base", "qemu-prealloc"} {
		if c := cells[tool]; c.VsBestFixed.N != 0 || c.BestFixed != "" {
			t.Errorf("%s: time x best fixed = %+v %q, want none", tool, c.VsBestFixed, c.BestFixed)
		}
	}
	js, err := json.Marshal(q)
	if err != nil || !strings.Contains(string(js), `"time_x_best_fixed":{"n":3,"median":0.9,"min":0.8,"max":1.2},"best_fixed":"qbench-unwritten"`) {
		t.Errorf("json %s, %v", js, err)
	}
	markdownHas(t, "t", blocks, nil,
		"## Overview: qbench's defaults ÷ the best fixed setting (qbench-nomerge, qbench-unwritten)\n",
		// Best setting: unwritten (median 1.5 against nomerge's 1.7);
		// qbench ÷ unwritten: 1.2/1.5, 0.9/1, 2/2.5.
		"| file system | workload | qbench ÷ best setting | best setting | qbench ÷ per-repeat minimum | fastest in the median repeat |\n|---|---|---|---|---|---|\n| xfs | alloc | 0.80 (0.80–0.90) | qbench-unwritten | 0.90 (0.80–1.20) | qbench-unwritten |\n\n",
		"| × limit | ÷ best fixed | write ampl. | time ÷ qbench-base |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
		"| qbench | 1.600 (0.900–9.000) | 1.00 (1.00–1.00) | – | – | 0.53 (0.45–0.60) | 1.00 (1.00–1.00) | – | 0.90 (0.80–1.20) | 1.00 (1.00–1.00) |",
		"| qbench-nomerge (1 failed) | 1.700 (1.000–2.400) | 1.00 (1.00–1.00) | – | – | 0.85 (0.50–1.20) | 1.00 (1.00–1.00) | – | – | 1.00 (1.00–1.00) |",
		"| × limit | read ampl. | time ÷ qbench-base |\n|---|---|---|---|---|---|---|---|---|---|\n| qbench | 1.000 |",
	)
}

// Three identical configurations (the defaults and two fixed settings)
// whose times only trade places between repeats: against the per-repeat
// minimum of the two fixed ones the defaults score 1.1 at the median,
// against the best setting about 1.
func TestBuild_VsBestSettingIdentical(t *testing.T) {
	var recs []Record
	for i, x := range [][3]float64{{1, 1.1, 1.2}, {1.1, 1.2, 1}, {1.2, 1, 1.1}, {1, 1.2, 1.1}, {1.1, 1, 1.2}, {1.2, 1.1, 1}} {
		rep := strconv.Itoa(i + 1)
		recs = append(recs, rec("ext4", "seed", "qbench", rep, x[0], 1, 1000),
			rec("ext4", "seed", "qbench-zeroes", rep, x[1], 1, 1000),
			rec("ext4", "seed", "qbench-nomerge", rep, x[2], 1, 1000))
	}
	cells := Build(recs)[0].Cells
	q := cells[0]
	// Every median is 1.1: the first name wins.
	if q.Tool != "qbench" || q.BestSetting != "qbench-nomerge" || q.VsBestSetting.N != 6 || math.Abs(q.VsBestSetting.Median-1) > 0.01 {
		t.Errorf("%s: best setting %q, time x it %+v; want qbench-nomerge, n 6, median about 1", q.Tool, q.BestSetting, q.VsBestSetting)
	}
	if math.Abs(q.VsBestFixed.Median-1.1) > 1e-9 {
		t.Errorf("per-repeat minimum %+v: want median 1.1", q.VsBestFixed)
	}
	for _, c := range cells[1:] {
		if c.VsBestSetting.N != 0 || c.BestSetting != "" {
			t.Errorf("%s: best setting %q %+v, want none", c.Tool, c.BestSetting, c.VsBestSetting)
		}
	}
}

func TestBuild_VsBestFixedEvenCountNamesBoth(t *testing.T) {
	recs := []Record{
		rec("ext4", "seed", "qbench", "1", 1, 1, 1000),
		rec("ext4", "seed", "qbench-nomerge", "1", 2, 1, 1000),
		rec("ext4", "seed", "qbench-unwritten", "1", 4, 1, 1000),
		rec("ext4", "seed", "qbench", "2", 1, 1, 1000),
		rec("ext4", "seed", "qbench-nomerge", "2", 4, 1, 1000),
		rec("ext4", "seed", "qbench-unwritten", "2", 1, 1, 1000),
	}
	q := Build(recs)[0].Cells[0]
	if q.Tool != "qbench" || q.VsBestFixed.Median != 0.75 || q.BestFixed != "qbench-nomerge/qbench-unwritten" {
		t.Errorf("%s: time x best fixed %+v, best %q; want 0.75, qbench-nomerge/qbench-unwritten", q.Tool, q.VsBestFixed, q.BestFixed)
	}
}

// markdownHas fails t unless WriteMarkdown's page for title, blocks and
// notes contains every one of wants.
func markdownHas(t *testing.T, title string, blocks []*Block, notes []string, wants ...string) {
	t.Helper()
	var md bytes.Buffer
	WriteMarkdown(&md, title, blocks, notes)
	for _, want := range wants {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}

// TestBuild_MachineCPU: the machine's busy CPU is summarised and divided
// per repeat by QEMU's best's, and the tables show it only when recorded.
func TestBuild_MachineCPU(t *testing.T) {
	withMachine := func(r Record, m float64) Record { r.MachineS = &m; return r }
	recs := []Record{
		withMachine(rec("ext4", "alloc", "qbench", "1", 1, 1, 1000), 1.5),
		withMachine(rec("ext4", "alloc", "qemu-prealloc", "1", 1, 1, 1000), 3),
		withMachine(rec("ext4", "alloc", "qbench", "2", 1, 1, 1000), 2),
		withMachine(rec("ext4", "alloc", "qemu-prealloc", "2", 1, 1, 1000), 2),
	}
	blocks := Build(recs)
	q := blocks[0].Cells[1]
	if q.Tool != "qbench" || q.Machine.Median != 1.75 || q.MachineVsBest.Median != 0.75 {
		t.Fatalf("%s: machine %+v, ÷ qemu-prealloc %+v; want median 1.75 and 0.75", q.Tool, q.Machine, q.MachineVsBest)
	}
	var md bytes.Buffer
	WriteMarkdown(&md, "t", blocks, nil)
	if !strings.Contains(md.String(), "machine CPU ÷ qemu-prealloc") {
		t.Errorf("no machine CPU column:\n%s", md.String())
	}
	md.Reset()
	WriteMarkdown(&md, "t", Build([]Record{rec("ext4", "alloc", "qbench", "1", 1, 1, 1000)}), nil)
	if strings.Contains(md.String(), "machine CPU s |") {
		t.Errorf("machine CPU column without a recorded figure:\n%s", md.String())
	}
}
