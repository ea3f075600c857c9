package main

import (
	"encoding/json"
	"github.com/qring/qring/internal/testkit"
	"path/filepath"
	"reflect"
	"testing"
)

// TestInfo_BackingChainAndSnapshots: info --backing-chain prints every
// image of the chain (human: separated by blank lines; JSON: an array),
// and info lists internal snapshots made by qemu-img snapshot -c: the
// same text as qemu-img and the same JSON values, for every image.
func TestInfo_BackingChainAndSnapshots(t *testing.T) {
	d := qemuDir(t)
	base := qemuImage(t, filepath.Join(d, "base.raw"), "raw", "2M")
	mid := qemuOverlay(t, filepath.Join(d, "mid.qcow2"), "base.raw", "raw", "write -P 1 0 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "first", mid)
	qemuIO(t, mid, "qcow2", "write -P 2 64k 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "a-much-longer-snapshot-name", mid)
	top := qemuOverlay(t, filepath.Join(d, "top.qcow2"), "mid.qcow2", "qcow2")
	for _, args := range [][]string{
		{"info", mid},
		{"info", top},
		{"info", "--backing-chain", top},
		{"info", "--backing-chain", mid},
		{"info", "--backing-chain", base},
		{"info", "--output=json", mid},
		{"info", "--output=json", "--backing-chain", top},
		{"info", "--output=json", "--backing-chain", base},
	} {
		got := mustQ(t, args...)
		want := testkit.MustRun(t, "qemu-img", args...)
		if args[1] != "--output=json" {
			if got != want {
				t.Errorf("qimg %q:\n%s\nqemu-img:\n%s", args[1:], got, want)
			}
			continue
		}
		var g, w any
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			t.Fatalf("qimg %q: %v\n%s", args[1:], err, got)
		}
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("qimg %q:\n%s\nqemu-img:\n%s", args[1:], got, want)
		}
	}
}
