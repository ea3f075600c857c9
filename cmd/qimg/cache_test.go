package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// TestCacheOptions_LikeQemu: -t and -T take QEMU's cache modes ("off"
// too, which qimg refused) where qemu-img takes them, and a bad one is
// refused with qemu-img's message and exit code, before anything is
// opened or created (qimg said "could not open ...: invalid cache mode",
// and rebase ignored -T).
func TestCacheOptions_LikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	base := qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "1M", "write -P 1 0 64k")
	img := qemuOverlay(t, filepath.Join(dir, "img.qcow2"), "base.qcow2", "qcow2", "write -P 2 64k 64k")
	out := filepath.Join(dir, "out.qcow2")
	cmds := func(mode string) [][]string {
		return [][]string{
			{"check", "-T", mode, img},
			{"compare", "-T", mode, img, base},
			{"convert", "-T", mode, "-O", "qcow2", img, out},
			{"convert", "-t", mode, "-O", "qcow2", img, out},
			{"rebase", "-t", mode, "-u", "-b", "base.qcow2", "-F", "qcow2", img},
			{"rebase", "-T", mode, "-u", "-b", "base.qcow2", "-F", "qcow2", img},
			{"amend", "-t", mode, "-o", "lazy_refcounts=off", img},
			{"commit", "-t", mode, "-d", img},
		}
	}
	for _, mode := range []string{"bogus", "", "None", "none", "off", "directsync", "writeback", "writethrough", "unsafe"} {
		for _, args := range cmds(mode) {
			os.Remove(out)
			o, e, code := runQ(t, args...)
			_, statErr := os.Stat(out)
			os.Remove(out) // qemu-img convert creates it before it reads -t
			q, qe, qcode := testkit.Run(t, "qemu-img", args...)
			os.Remove(out)
			if o != q || code != qcode || strings.TrimPrefix(e, "qimg: "+args[0]+": ") != strings.TrimPrefix(qe, "qemu-img: ") {
				t.Errorf("%q:\nqimg exit %d %q %q\nqemu-img exit %d %q %q", args, code, o, e, qcode, q, qe)
			}
			if code != 0 && statErr == nil {
				t.Errorf("%q: qimg failed, and left %s", args, out)
			}
		}
	}
	// qemu-io's -t, for qimg io.
	for _, mode := range []string{"bogus", "off", "directsync", "writethrough"} {
		o, e, code := runQ(t, "io", "-t", mode, "-c", "read -P 2 64k 64k", img)
		q, qe, qcode := testkit.Run(t, "qemu-io", "-t", mode, "-c", "read -P 2 64k 64k", img)
		if code != qcode || strings.TrimPrefix(e, "qimg: io: ") != strings.TrimPrefix(qe, "qemu-io: ") {
			t.Errorf("io -t %s: qimg exit %d %q %q\nqemu-io exit %d %q %q", mode, code, o, e, qcode, q, qe)
		}
	}
}

// flushCounter counts the writes and flushes of a device, and the writes
// made since the last flush.
type flushCounter struct {
	block.Device
	mu                      sync.Mutex
	writes, flushes, unsync int
}

func (c *flushCounter) wrote() {
	c.mu.Lock()
	c.writes++
	c.unsync++
	c.mu.Unlock()
}

func (c *flushCounter) Writev(off int64, bufs [][]byte) error {
	c.wrote()
	return c.Device.Writev(off, bufs)
}

func (c *flushCounter) WriteZeroes(off, n int64, flags block.Flags) error {
	c.wrote()
	return c.Device.WriteZeroes(off, n, flags)
}

func (c *flushCounter) Flush() error {
	err := c.Device.Flush()
	c.mu.Lock()
	c.flushes++
	c.unsync = 0
	c.mu.Unlock()
	return err
}

// countFlushes makes the devices commands write through count their
// writes and flushes until the test ends; it returns the counters made.
func countFlushes(t *testing.T) *[]*flushCounter {
	var got []*flushCounter
	testHookCacheDev = func(d block.Device) block.Device {
		c := &flushCounter{Device: d}
		got = append(got, c)
		return c
	}
	t.Cleanup(func() { testHookCacheDev = nil })
	return &got
}

// TestCache_WritethroughFlushesEachWrite: -t writethrough and directsync
// flush each write before the next, in convert (compressed too), rebase
// and io, as QEMU's block backend without a write cache does (qimg
// accepted the modes and wrote back, flushing at the end only);
// writeback does not.
func TestCache_WritethroughFlushesEachWrite(t *testing.T) {
	dir := workDir(t)
	src := filepath.Join(dir, "src.qcow2")
	mustQ(t, "create", "-q", src, "4M")
	mustQ(t, "io", src, "-c", "write -P 1 0 64k", "-c", "write -P 2 1M 64k", "-c", "write -P 3 3M 64k")
	for _, c := range []struct {
		name string
		args func(mode string) []string
	}{
		{"convert", func(m string) []string {
			out := filepath.Join(dir, "out-"+m+".qcow2")
			os.Remove(out)
			return []string{"convert", "-t", m, "-O", "qcow2", src, out}
		}},
		{"convert -c", func(m string) []string {
			out := filepath.Join(dir, "outc-"+m+".qcow2")
			os.Remove(out)
			return []string{"convert", "-c", "-t", m, "-O", "qcow2", src, out}
		}},
		{"rebase", func(m string) []string {
			top := filepath.Join(dir, "top-"+m+".qcow2")
			os.Remove(top)
			mustQ(t, "create", "-q", "-b", "src.qcow2", "-F", "qcow2", top)
			return []string{"rebase", "-t", m, "-b", "", top}
		}},
		{"io", func(m string) []string {
			return []string{"io", "-t", m, "-c", "write -P 4 0 4k", "-c", "write -P 5 8k 4k", "-c", "write -z 64k 4k", src}
		}},
	} {
		for _, mode := range []string{"writeback", "writethrough", "directsync"} {
			got := countFlushes(t)
			mustQ(t, c.args(mode)...)
			if len(*got) != 1 {
				t.Fatalf("%s -t %s: %d devices written through, want 1", c.name, mode, len(*got))
			}
			n := (*got)[0]
			if c.name == "convert -c" {
				// Compressed writes go around the device (its
				// flushes show them): one per cluster of data.
				n.writes, n.unsync = 3, 0
			}
			if n.writes < 3 {
				t.Fatalf("%s -t %s: only %d writes: the case shows nothing", c.name, mode, n.writes)
			}
			if mode == "writeback" {
				if n.flushes > 1 {
					t.Errorf("%s -t writeback: %d flushes for %d writes, want at most 1", c.name, n.flushes, n.writes)
				}
				continue
			}
			if n.unsync != 0 || n.flushes < n.writes {
				t.Errorf("%s -t %s: %d flushes for %d writes (%d left unflushed)", c.name, mode, n.flushes, n.writes, n.unsync)
			}
		}
	}
}

// TestIO_WritethroughByDefault: qemu-io's default cache mode is
// writethrough (each write flushed before it is reported: qemu-io.c's
// writethrough = true); -n, -t none and -t writeback turn it off. qimg io
// wrote back by default, flushing once at the end. Compressed writes,
// which go around the device, flush once per command.
func TestIO_WritethroughByDefault(t *testing.T) {
	dir := workDir(t)
	img := filepath.Join(dir, "a.qcow2")
	cmds := []string{"-c", "write -P 4 0 4k", "-c", "write -P 5 8k 4k", "-c", "write -z 64k 4k", "-c", "write -c 1M 64k", "-c", "write -c 2M 64k"}
	for _, c := range []struct {
		flags   []string
		through bool
	}{{nil, true}, {[]string{"-n"}, false}, {[]string{"-t", "writeback"}, false}, {[]string{"-t", "none"}, false}, {[]string{"-t", "directsync"}, true}} {
		mustQ(t, "create", "-q", img, "4M") // fresh: compressed writes need unallocated clusters
		got := countFlushes(t)
		mustQ(t, append(append(append([]string{"io"}, c.flags...), cmds...), img)...)
		if len(*got) != 1 {
			t.Fatalf("%q: %d devices, want 1", c.flags, len(*got))
		}
		n := (*got)[0]
		if n.writes < 3 {
			t.Fatalf("%q: only %d writes: the case shows nothing", c.flags, n.writes)
		}
		switch {
		case c.through && (n.unsync != 0 || n.flushes < n.writes+2):
			t.Errorf("%q: %d flushes for %d writes and 2 compressed ones (%d left unflushed), want each flushed", c.flags, n.flushes, n.writes, n.unsync)
		case !c.through && n.flushes > 1:
			t.Errorf("%q: %d flushes for %d writes, want at most 1 (at the end)", c.flags, n.flushes, n.writes)
		}
	}
}

// TestIO_WritethroughOneFlushPerRequest: a write qimg io makes in 1 MiB
// pieces is one request to qemu-io: flushed once after its last piece,
// not after each (a 1 GiB write made 1024 flushes).
func TestIO_WritethroughOneFlushPerRequest(t *testing.T) {
	dir := workDir(t)
	img := filepath.Join(dir, "a.qcow2")
	mustQ(t, "create", "-q", img, "8M")
	got := countFlushes(t)
	mustQ(t, "io", "-c", "write -P 1 0 3M", img)
	n := (*got)[0]
	if n.writes < 3 || n.unsync != 0 || n.flushes > 2 {
		t.Errorf("write 0 3M: %d writes, %d flushes (%d left unflushed), want the pieces flushed once (and once at the end)", n.writes, n.flushes, n.unsync)
	}
}
