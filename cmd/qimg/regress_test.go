package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestRegress_CLI runs the reproductions of "Never lose a byte" through
// the CLI alone, with QEMU as the oracle: a reserve grown past new
// refcount metadata (bug 1) for cluster sizes 512 B, 1 KiB and 4 KiB and
// prealloc-align 1M, 4M and 8M, and zero writes with 2 MiB clusters
// (bug 8). qemu-img check must pass and qemu-io must read what was
// written.
func TestRegress_CLI(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t) // qemu-img check on every image at the end
	for _, cs := range []string{"512", "1K", "4K"} {
		for _, align := range []string{"1M", "4M", "8M"} {
			p := filepath.Join(d, fmt.Sprintf("r-%s-%s.qcow2", cs, align))
			mustQ(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, p, "64M")
			mustQ(t, "io", "-o", "prealloc-size=4M,prealloc-align="+align+",prealloc-fill=unwritten", p, "-c", "write -P 0xab 0 12M")
			if o := testkit.MustRun(t, "qemu-io", "-c", "read -P 0xab 0 12M", "-c", "read -P 0 12M 52M", p); strings.Contains(o, "fail") {
				t.Errorf("cluster_size=%s prealloc-align=%s: %s", cs, align, o)
			}
		}
	}
	z := filepath.Join(d, "z.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M,compat=0.10", z, "64M")
	mustQ(t, "io", z, "-c", "write -P 1 0 4M", "-c", "write -z 0 2M")
	if o := testkit.MustRun(t, "qemu-io", "-c", "read -P 0 0 2M", "-c", "read -P 1 2M 2M", z); strings.Contains(o, "fail") {
		t.Error(o)
	}
	z3 := filepath.Join(d, "z3.qcow2")
	mustQ(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", z3, "64M")
	mustQ(t, "io", z3, "-c", "write -P 1 0 4M", "-c", "write -z 1024 2096128")
	if o := testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 1024", "-c", "read -P 0 1024 2096128", "-c", "read -P 1 2M 2M", z3); strings.Contains(o, "fail") {
		t.Error(o)
	}
}
