package main

import (
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestFastZeroUnmaps: WRITE_ZEROES with FAST_ZERO and without NO_HOLE
// may punch holes, as without FAST_ZERO: with --discard=unmap qemu-nbd
// deallocates the clusters (BDRV_REQ_NO_FALLBACK|BDRV_REQ_MAY_UNMAP),
// while qnbd kept them allocated as preallocated zero clusters, so a
// qemu-img convert or nbdcopy onto the export, which zeroes the target
// with FAST_ZERO first, left every cluster it zeroed taking space. With
// NO_HOLE the clusters stay allocated, with FAST_ZERO or not.
func TestFastZeroUnmaps(t *testing.T) {
	need(t, "qemu-img", "nbdsh")
	env := nbdshEnv()
	if env == nil {
		testkit.Missing(t, "nbdsh does not run (python3-libnbd missing?)")
	}
	dir, img := create(t, "4M")
	s := startUnix(t, dir, "s", "--discard=unmap", img)
	const script = `
h.pwrite(b"\x55" * (1 << 20), 0)
h.flush()
h.zero(256 << 10, 0, nbd.CMD_FLAG_FAST_ZERO)
h.zero(256 << 10, 256 << 10, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
h.zero(256 << 10, 512 << 10)
assert h.pread(768 << 10, 0) == bytes(768 << 10)
h.shutdown()
`
	cmd := exec.Command("nbdsh", "-u", s.uri, "-c", script)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	s.stop()
	check(t, img)
	var m []struct {
		Start, Length int64
		Zero, Data    bool
		Offset        *int64
	}
	if err := json.Unmarshal([]byte(sh(t, "qemu-img", "map", "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	// allocated reports whether the cluster at off keeps host space.
	allocated := func(off int64) bool {
		for _, e := range m {
			if e.Start <= off && off < e.Start+e.Length {
				if !e.Zero || e.Data {
					t.Errorf("%d: not zeros: %+v", off, e)
				}
				return e.Offset != nil
			}
		}
		t.Fatalf("%d: not in the map", off)
		return false
	}
	if allocated(0) {
		t.Errorf("FAST_ZERO without NO_HOLE under --discard=unmap kept the clusters allocated")
	}
	if !allocated(256 << 10) {
		t.Errorf("FAST_ZERO with NO_HOLE deallocated the clusters")
	}
	if allocated(512 << 10) {
		t.Errorf("WRITE_ZEROES without NO_HOLE under --discard=unmap kept the clusters allocated")
	}
}
