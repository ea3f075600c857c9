package flame

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestLayout_WidthsAndDepths(t *testing.T) {
	f, err := ParseFolded(strings.NewReader("main;a;b 30\nmain;a 10\nmain;c 60\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	fr := Layout(f, Options{Width: 120}) // 100 px of plot for 100 samples
	got := map[string]Frame{}
	for _, x := range fr {
		got[x.Name] = x
	}
	want := map[string]Frame{
		"all":  {Depth: 0, X: 10, W: 100, Value: 100},
		"main": {Depth: 1, X: 10, W: 100, Value: 100},
		"a":    {Depth: 2, X: 10, W: 40, Value: 40},
		"b":    {Depth: 3, X: 10, W: 30, Value: 30},
		"c":    {Depth: 2, X: 50, W: 60, Value: 60},
	}
	if len(got) != len(want) {
		t.Fatalf("frames %v", fr)
	}
	for k, w := range want {
		g := got[k]
		if g.Depth != w.Depth || g.X != w.X || g.W != w.W || g.Value != w.Value {
			t.Errorf("%s: got %+v want %+v", k, g, w)
		}
	}
}

func TestRender_ValidSVG(t *testing.T) {
	f := Folded{}
	f.Add([]string{"main", "qcow2.(*Image).Writev", "x<y>&z"}, 5)
	f.Add([]string{"main", "tiny"}, 0) // ignored
	var buf bytes.Buffer
	if err := Render(&buf, f, Options{Title: "t & t"}); err != nil {
		t.Fatal(err)
	}
	svg := buf.String()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
	}
	if !strings.Contains(svg, "qcow2.(*Image).Writev") {
		t.Error("frame name missing")
	}
}

func TestFoldPerfScript(t *testing.T) {
	in := `qbench 123 [001] 1.0: 10101 cpu-clock:
	ffffffff81000000 do_syscall_64+0x10 ([kernel.kallsyms])
	4a0000 main.work+0x20 (/bin/qbench)
	4a1000 main.main+0x5 (/bin/qbench)

qbench 123 [001] 1.1: 10101 cpu-clock:
	4a0000 main.work+0x20 (/bin/qbench)
	4a1000 main.main+0x5 (/bin/qbench)
`
	f, err := FoldPerfScript(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	f.Write(&buf)
	want := "qbench;main.main;main.work 1\nqbench;main.main;main.work;do_syscall_64_[k] 1\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestFoldPprof(t *testing.T) {
	fnMain := &profile.Function{ID: 1, Name: "main.main"}
	fnW := &profile.Function{ID: 2, Name: "qcow2.(*Image).Writev"}
	l1 := &profile.Location{ID: 1, Line: []profile.Line{{Function: fnMain}}}
	l2 := &profile.Location{ID: 2, Line: []profile.Line{{Function: fnW}}}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample:     []*profile.Sample{{Location: []*profile.Location{l2, l1}, Value: []int64{1, 10000000}}},
		Location:   []*profile.Location{l1, l2},
		Function:   []*profile.Function{fnMain, fnW},
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	f, unit, err := FoldPprof(&buf, -1)
	if err != nil {
		t.Fatal(err)
	}
	if unit != "cpu/nanoseconds" || f["main.main;qcow2.(*Image).Writev"] != 10000000 {
		t.Errorf("unit %q folded %v", unit, f)
	}
}
