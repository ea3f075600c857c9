package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/imgopen"
)

// TestRun_NoRing: where no ring can be set up, -i io_uring fails up front
// with QEMU's "Unable to use io_uring" and the default falls back to
// threads, saying so and why in the text and the JSON output.
func TestRun_NoRing(t *testing.T) {
	restore := imgopen.SimulateNoRing(errors.New("io_uring_setup: operation not permitted"))
	defer restore()
	p := filepath.Join(t.TempDir(), "r.raw")
	const why = "io_uring unavailable: io_uring_setup: operation not permitted"
	for _, aio := range []string{"io_uring", "io_uring-nomerge"} {
		code, out, errOut := runCLI(t, "--create", "1M", "-f", "raw", "-w", "-n", "16", "-i", aio, p)
		if code != 1 || !strings.Contains(errOut, "Unable to use io_uring") || strings.Contains(out, "Run completed") {
			t.Errorf("-i %s: exit %d, stdout %q, stderr %q", aio, code, out, errOut)
		}
		code, _, errOut = runCLI(t, "-o", "driver=raw,file="+p, "-n", "16", "-i", aio)
		if code != 1 || !strings.Contains(errOut, "Unable to use io_uring") {
			t.Errorf("spec -i %s: exit %d, stderr %q", aio, code, errOut)
		}
	}
	code, out, errOut := runCLI(t, "-n", "16", "-d", "4", p)
	if code != 0 || !strings.Contains(out, "backend: threads ("+why+")\n") {
		t.Errorf("default AIO: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	code, out, errOut = runCLI(t, "--json", "-n", "16", "-d", "4", p)
	var raw struct {
		Config map[string]any `json:"config"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &raw) != nil {
		t.Fatalf("--json: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	if c := raw.Config; c["backend"] != "threads" || c["backend_reason"] != why || c["aio"] != "io_uring" {
		t.Errorf("--json config: backend %v, backend_reason %v, aio %v", c["backend"], c["backend_reason"], c["aio"])
	}
	code, out, _ = runCLI(t, "-n", "16", "-d", "4", "-i", "threads", p)
	if code != 0 || !strings.Contains(out, "backend: threads\n") {
		t.Errorf("-i threads: exit %d, stdout:\n%s", code, out)
	}
}

// TestRun_NativeAIORefused: qring has no Linux AIO backend.
func TestRun_NativeAIORefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.raw")
	code, _, errOut := runCLI(t, "--create", "1M", "-f", "raw", "-w", "-n", "16", "-i", "native", p)
	if code != 1 || !strings.Contains(errOut, "aio=native (Linux AIO) is not supported") {
		t.Errorf("-i native: exit %d, stderr %q", code, errOut)
	}
}
