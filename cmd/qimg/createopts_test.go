package main

import (
	"github.com/qring/qring/internal/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreate_EchoedOptions: the options create echoes with their defaults
// (compression_type=zlib, extended_l2=off) are accepted with those values,
// and compression_type=zstd too, with qemu-img's line; the values qring
// cannot create are refused before anything is echoed or written.
func TestCreate_EchoedOptions(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	ours := filepath.Join(d, "a.qcow2")
	theirs := filepath.Join(d, "b.qcow2")
	opt := "compression_type=zlib,extended_l2=off"
	for _, opt := range []string{opt, "compression_type=zstd"} {
		got := mustQ(t, "create", "-f", "qcow2", "-o", opt, ours, "1M")
		want := testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", opt, theirs, "1M")
		if strings.ReplaceAll(want, theirs, ours) != got {
			t.Errorf("create -o %s echo:\n ours %q\nqemu  %q", opt, got, want)
		}
	}
	for _, o := range []string{"extended_l2=on", "compression_type=lz4"} {
		p := filepath.Join(d, "r.qcow2")
		out, e, code := runQ(t, "create", "-f", "qcow2", "-o", o, p, "1M")
		name, _, _ := strings.Cut(o, "=")
		if code != 1 || out != "" || !strings.Contains(e, name) {
			t.Errorf("create -o %s: exit %d, stdout %q, stderr %q; want 1, nothing echoed, a message naming %s", o, code, out, e, name)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("create -o %s left %s behind", o, p)
		}
	}
}
