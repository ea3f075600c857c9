package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	m := qemuHostMap(t, img)
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

// TestWriteZeroes_UnmapLikeQemuNbd: WRITE_ZEROES without NO_HOLE frees
// what it zeroes under --discard=ignore too, as qemu-nbd 7.2 (qnbd kept
// the clusters allocated there), their host space punched only under
// --discard=unmap, and zeroing the sector tail of an
// odd-sized raw file keeps its length (qnbd grew a 1000-byte file to
// 1024 bytes; qemu-nbd punches with KEEP_SIZE). With NO_HOLE both keep
// the clusters, and a raw file grows to the sector, as qemu-nbd's.
func TestWriteZeroes_UnmapLikeQemuNbd(t *testing.T) {
	env := needNbdsh(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := shortDir(t)
	sock := filepath.Join(dir, "z.sock")
	run := func(srv, script string, args ...string) {
		var s *server
		if srv == "qemu-nbd" {
			s = startQemuNbdOnce(t, sock, args...)
		} else {
			s = start(t, "", sock, append([]string{"-k", sock, "--once"}, args...)...)
		}
		cmd := exec.Command("nbdsh", "-c", "h.connect_uri('nbd+unix:///?socket="+sock+"')\n"+script+"\nh.flush()\nh.shutdown()")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", srv, args, err, out)
		}
		if err := <-s.done; err != nil {
			t.Fatalf("%s: %v\n%s", srv, err, s.stderr.String())
		}
	}
	// layout is qemu-img map's answer with the host offsets left out:
	// whether each run keeps host space.
	layout := func(img string) string {
		var b strings.Builder
		for _, e := range qemuHostMap(t, img) {
			fmt.Fprintf(&b, "%d+%d zero=%v data=%v host=%v\n", e.Start, e.Length, e.Zero, e.Data, e.Offset != nil)
		}
		return b.String()
	}
	const qcowScript = `
h.zero(256 << 10, 0)
h.zero(256 << 10, 256 << 10, nbd.CMD_FLAG_NO_HOLE)
h.zero(256 << 10, 512 << 10, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(1 << 20, 0)[:768 << 10] == bytes(768 << 10)
`
	for _, discard := range []string{"ignore", "unmap"} {
		got, used := map[string]string{}, map[string]int64{}
		for _, srv := range []string{"qemu-nbd", "qnbd"} {
			img := filepath.Join(dir, srv+".qcow2")
			sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
			sh(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", img)
			run(srv, qcowScript, "--discard="+discard, "-f", "qcow2", img)
			check(t, img)
			got[srv] = layout(img)
			var st syscall.Stat_t
			if err := syscall.Stat(img, &st); err != nil {
				t.Fatal(err)
			}
			used[srv] = st.Blocks * 512
		}
		if got["qnbd"] != got["qemu-nbd"] {
			t.Errorf("--discard=%s: qnbd left\n%s\nqemu-nbd\n%s", discard, got["qnbd"], got["qemu-nbd"])
		}
		// The freed clusters' host space: punched with unmap only, as
		// qemu-nbd's file node ignores discards under ignore (qnbd
		// punched it either way).
		if d := used["qnbd"] - used["qemu-nbd"]; d < -128<<10 || d > 128<<10 {
			t.Errorf("--discard=%s: the image takes %d bytes on disk, qemu-nbd's %d", discard, used["qnbd"], used["qemu-nbd"])
		}
		if discard == "ignore" {
			// -o pass-discard-request=on punches all the same, as
			// qemu-nbd with the qcow2 node's pass-discard-request.
			img := filepath.Join(dir, "pass.qcow2")
			sh(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
			sh(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", img)
			run("qnbd", qcowScript, "--discard=ignore", "-o", "pass-discard-request=on", "-f", "qcow2", img)
			var st syscall.Stat_t
			if err := syscall.Stat(img, &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks*512 >= used["qnbd"] {
				t.Errorf("-o pass-discard-request=on under --discard=ignore: %d bytes on disk, as many as without it (%d)", st.Blocks*512, used["qnbd"])
			}
		}
		for _, flags := range []string{"0", "nbd.CMD_FLAG_NO_HOLE"} {
			sizes := map[string]int64{}
			for _, srv := range []string{"qemu-nbd", "qnbd"} {
				img := filepath.Join(dir, srv+".raw")
				if err := os.WriteFile(img, bytes.Repeat([]byte{0x77}, 1000), 0o644); err != nil {
					t.Fatal(err)
				}
				run(srv, "h.zero(512, 512, "+flags+")\nassert h.pread(1024, 0) == b'\\x77' * 512 + bytes(512)", "--discard="+discard, "-f", "raw", img)
				fi, err := os.Stat(img)
				if err != nil {
					t.Fatal(err)
				}
				sizes[srv] = fi.Size()
			}
			if sizes["qnbd"] != sizes["qemu-nbd"] {
				t.Errorf("--discard=%s, flags %s: zeroing the tail of a 1000-byte raw file left it %d bytes long, qemu-nbd %d", discard, flags, sizes["qnbd"], sizes["qemu-nbd"])
			}
		}
	}
}

// mapRun is one run of qemu-img map --output=json.
type mapRun struct {
	Start, Length int64
	Zero, Data    bool
	Offset        *int64
}

// qemuHostMap is qemu-img map's answer for img, with the host offsets.
func qemuHostMap(t *testing.T, img string) []mapRun {
	t.Helper()
	var m []mapRun
	if err := json.Unmarshal([]byte(sh(t, "qemu-img", "map", "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}
