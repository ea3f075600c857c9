package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
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
	var md bytes.Buffer
	WriteMarkdown(&md, "t <&>", blocks, []string{"a note"})
	for _, want := range []string{"| ext4 | seed | 1.00 (2.000 s) | 0.50 (1.000 s) |", "### disk / alloc", "- a note", "| × limit | write ampl. | time ÷ qbench-base |", " | 0.25 |\n"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
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
	var md bytes.Buffer
	WriteMarkdown(&md, "t", blocks, nil)
	for _, want := range []string{
		"| × limit | CPU × fio-floor | write ampl. |\n|---|---|---|---|---|---|---|---|---|---|\n",
		"| fio-floor | 0.800 | 2.00 | – | – | 0.40 | 0.50 | 0.80 | 1.00 | 1.00 |",
		"| qbench-nomerge | 1.000 | 3.00 | – | – | 0.50 | 0.75 | 1.00 | 1.50 | 1.00 |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}
