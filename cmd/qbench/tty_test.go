package main

import (
	"bytes"
	"os"
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

// TestIsTerminal: a pseudo-terminal is a terminal; /dev/null, a character
// device too, is not (the progress bar stays off with stdout there).
func TestIsTerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTerminal(null) {
		t.Errorf("%s is a terminal", os.DevNull)
	}
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer pty.Close()
	if !isTerminal(pty) {
		t.Errorf("/dev/ptmx is not a terminal")
	}
}
