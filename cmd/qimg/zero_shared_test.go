package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestZero_SharedClusterKeepsOffsetMatchesQemu: a zero write (no
// unmap) over a cluster an internal snapshot shares keeps the entry's
// host offset with the zero flag, as QEMU's zero_in_l2_slice does
// (qring made it a plain zero cluster and dropped its reference: map
// showed no offset, and a later write -c succeeded where qemu-io's
// fails). The map, a compressed write's refusal, a later write (which
// copies the cluster out), the snapshot's data and qemu-img check are
// qemu-img's.
func TestZero_SharedClusterKeepsOffsetMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, opts := range []string{"cluster_size=65536", "cluster_size=4096", "cluster_size=65536,extended_l2=on", "cluster_size=65536,compat=0.10"} {
		cs := int64(65536)
		if strings.Contains(opts, "4096") {
			cs = 4096
		}
		at := 15 * cs
		ours, theirs := filepath.Join(d, "o.qcow2"), filepath.Join(d, "q.qcow2")
		for _, p := range []string{ours, theirs} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, fmt.Sprint(16*cs))
			qio(t, p, fmt.Sprintf("write -P 5 %d %d", at, cs), fmt.Sprintf("write -P 6 0 %d", cs))
			testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", p)
		}
		steps := []string{
			fmt.Sprintf("write -z %d %d", at, cs),
			fmt.Sprintf("write -z 0 %d", cs/2),
			fmt.Sprintf("write -c %d %d", at, cs),
			fmt.Sprintf("write -P 7 %d 512", at+512),
			fmt.Sprintf("read -P 7 %d 512", at+512),
			fmt.Sprintf("read -P 0 %d 512", at),
		}
		for _, c := range steps {
			got, _, _ := runQ(t, "io", "-f", "qcow2", "-c", c, ours)
			want, qerr, _ := testkit.Run(t, "qemu-io", "-f", "qcow2", "-c", c, theirs)
			if ioFailed(got) != ioFailed(want+qerr) {
				t.Errorf("%s: %s: qimg %q, qemu-io %q", opts, c, got, want+qerr)
			}
			if m, qm := mapShape(t, ours), mapShape(t, theirs); m != qm {
				t.Errorf("%s: after %s: map\n%s\nqemu-img's\n%s", opts, c, m, qm)
			}
		}
		for _, p := range []string{ours, theirs} {
			testkit.QemuCheck(t, p)
			testkit.MustRun(t, "qemu-img", "snapshot", "-a", "s", p)
			qio(t, p, fmt.Sprintf("read -P 5 %d %d", at, cs), fmt.Sprintf("read -P 6 0 %d", cs))
		}
	}
}

// ioFailed reports whether a qemu-io style output says the command
// failed (an error, or a pattern that did not verify).
func ioFailed(out string) bool { return strings.Contains(out, "failed") }

// mapShape is qemu-img map's JSON of p without the offsets' values:
// which runs are data, zero, and have a host offset.
func mapShape(t *testing.T, p string) string {
	t.Helper()
	var es []struct {
		Start, Length int64
		Data, Zero    bool
		Offset        *int64
	}
	if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "map", "--output=json", p)), &es); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%d+%d data=%v zero=%v offset=%v\n", e.Start, e.Length, e.Data, e.Zero, e.Offset != nil)
	}
	return b.String()
}
