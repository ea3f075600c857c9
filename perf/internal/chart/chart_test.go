package chart

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

func TestRender_WellFormed(t *testing.T) {
	var buf bytes.Buffer
	err := Render(&buf, "seed <table>", []Group{
		{Label: "ssd", Note: "1M req", Bars: []Bar{{"before", 61.153, 60, 62}, {"after", 36.313, 36, 37}}},
		{Label: "empty"},
		{Label: "nan", Bars: []Bar{{"before", math.NaN(), math.NaN(), math.NaN()}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	svg := buf.String()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{"61.2 s", "36.3 s", "ssd after: median 36.313 s"} {
		if !strings.Contains(svg, want) {
			t.Errorf("missing %q", want)
		}
	}
}
