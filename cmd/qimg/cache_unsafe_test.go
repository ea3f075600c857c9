package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// hostFlushes counts the flushes that reach a host file.
type hostFlushes struct {
	block.Device
	n *atomic.Int64
}

func (h hostFlushes) Flush() error {
	h.n.Add(1)
	return h.Device.Flush()
}

// TestCache_UnsafeSkipsHostFlushesLikeQemu: -t unsafe writes the image
// without one flush of its host file (QEMU's BDRV_O_NO_FLUSH: qemu-img
// calls no fsync or fdatasync, strace shows), in convert, commit,
// rebase, amend and io, and the images are the same as with writeback,
// and as qemu-img's; writeback flushes. qimg treated unsafe as
// writeback and flushed.
func TestCache_UnsafeSkipsHostFlushesLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	fix := testkit.Dir(t) // each run starts from copies of these
	src := qemuImage(t, filepath.Join(fix, "src.qcow2"), "qcow2", "4M", "write -P 1 0 64k", "write -P 2 1M 64k")
	qemuImage(t, filepath.Join(fix, "b.qcow2"), "qcow2", "4M", "write -P 3 0 1M")
	qemuOverlay(t, filepath.Join(fix, "t.qcow2"), "b.qcow2", "qcow2", "write -P 4 64k 64k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(fix, "out.qcow2"), "4M")
	// fresh copies the fixtures into dir/who and returns a path there.
	fresh := func(who string) func(string) string {
		d := filepath.Join(dir, who)
		os.MkdirAll(d, 0o755)
		for _, n := range []string{"b.qcow2", "t.qcow2", "out.qcow2"} {
			if err := os.WriteFile(filepath.Join(d, n), mustReadFile(t, filepath.Join(fix, n)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return func(n string) string { return filepath.Join(d, n) }
	}
	strace, _ := exec.LookPath("strace")
	t.Cleanup(func() { testHookFileDev = nil })
	for _, c := range []struct {
		args func(p func(string) string) []string
		out  string // the image written
	}{
		// convert -n: into an existing image (creating one syncs in
		// QEMU whatever the mode).
		{func(p func(string) string) []string {
			return []string{"convert", "-n", "-O", "qcow2", src, p("out.qcow2")}
		}, "out.qcow2"},
		{func(p func(string) string) []string { return []string{"commit", "-q", p("t.qcow2")} }, "b.qcow2"},
		{func(p func(string) string) []string { return []string{"rebase", "-b", "", p("t.qcow2")} }, "t.qcow2"},
		{func(p func(string) string) []string {
			return []string{"amend", "-o", "lazy_refcounts=on", p("t.qcow2")}
		}, "t.qcow2"},
		{func(p func(string) string) []string {
			return []string{"io", "-c", "write -P 5 0 4k", "-c", "flush", "-c", "write -z 1M 64k", p("t.qcow2")}
		}, "t.qcow2"},
	} {
		var ours func(string) string
		for _, mode := range []string{"writeback", "unsafe"} {
			var n atomic.Int64
			testHookFileDev = func(d block.Device) block.Device { return hostFlushes{d, &n} }
			ours = fresh("o" + mode)
			args := c.args(ours)
			mustQ(t, append([]string{args[0], "-t", mode}, args[1:]...)...)
			testHookFileDev = nil
			if got := n.Load(); (mode == "unsafe") != (got == 0) {
				t.Errorf("%s -t %s: %d flushes reached the host file", args[0], mode, got)
			}
		}
		theirs := fresh("q")
		args := c.args(theirs)
		tool, targs := "qemu-img", append([]string{args[0], "-t", "unsafe"}, args[1:]...)
		if args[0] == "io" {
			tool, targs = "qemu-io", append([]string{"-t", "unsafe"}, args[1:]...)
		}
		if strace != "" {
			log := filepath.Join(dir, "strace.log")
			testkit.MustRun(t, strace, append([]string{"-f", "-qq", "-o", log, "-e", "trace=fsync,fdatasync", tool}, targs...)...)
			if s := string(mustReadFile(t, log)); strings.Contains(s, "sync(") {
				t.Errorf("%s %s -t unsafe synced:\n%s", tool, args[0], s)
			}
		} else {
			testkit.MustRun(t, tool, targs...)
		}
		testkit.MustRun(t, "qemu-img", "compare", ours(c.out), theirs(c.out))
	}
}
