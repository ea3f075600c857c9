package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// Engine options (-o name=value) reach the engine from io, info, check and
// map; an unknown one is one clear error line.
func TestEngineOptions(t *testing.T) {
	dir := qemuDir(t)
	p := filepath.Join(dir, "e.qcow2")
	mustQ(t, "create", "-f", "qcow2", p, "64M")
	// prealloc=off writes zero buffers around the data (the seed's
	// "before" column); the metrics after a write show it.
	mustQ(t, "io", "-o", "prealloc=off,l2-cache-size=128k", p, "-c", "write -P 0x5a 1000 5000")
	testkit.MustRun(t, "qemu-io", "-c", "read -P 0x5a 1000 5000", "-c", "read -P 0 0 1000", p)
	for _, cmd := range [][]string{
		{"info", "-o", "l2-cache-size=1M", p},
		{"check", "-o", "refcount-cache-size=256k", p},
		{"map", "-o", "l2-cache-entry-size=4k", "--output=json", p},
	} {
		mustQ(t, cmd...)
	}
	_, stderr, code := runQ(t, "io", "-o", "bogus=1", p, "-c", "flush")
	if code == 0 || !strings.Contains(stderr, `unknown qcow2 option "bogus"`) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("bogus option: code %d, stderr %q", code, stderr)
	}
}
