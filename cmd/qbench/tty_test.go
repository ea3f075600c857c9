package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressBar_Update(t *testing.T) {
	var b bytes.Buffer
	p := &progressBar{w: &b}
	p.update(250, 1000, time.Second)
	got := b.String()
	for _, want := range []string{"\r[=======>", " 25%", "250/1000", "0.2k IOPS", "ETA 3s"} {
		if !strings.Contains(got, want) {
			t.Errorf("bar %q lacks %q", got, want)
		}
	}
	p.update(1000, 1000, 4*time.Second)
	if !strings.HasSuffix(b.String(), "\n") || p.drawn {
		t.Errorf("finished bar not ended with a newline: %q", b.String())
	}
	if isTerminal(&b) {
		t.Errorf("a buffer is not a terminal")
	}
}
