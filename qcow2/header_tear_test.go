package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// headerRec records every write to cluster 0 of the device under it,
// and whether a flush came before it since the previous one.
type headerRec struct {
	block.Device
	mu       sync.Mutex
	cs       int64
	writes   [][]byte
	flushed  bool
	unflushd int // header writes with no flush since the previous one
}

func (d *headerRec) Writev(off int64, bufs [][]byte) error {
	if off < d.cs {
		d.mu.Lock()
		if len(d.writes) > 0 && !d.flushed {
			d.unflushd++
		}
		d.writes = append(d.writes, bytes.Join(bufs, nil))
		d.flushed = false
		d.mu.Unlock()
	}
	return d.Device.Writev(off, bufs)
}

func (d *headerRec) Flush() error {
	err := d.Device.Flush()
	d.mu.Lock()
	d.flushed = true
	d.mu.Unlock()
	return err
}

// tornStates is every cluster 0 a power cut during write k of ws could
// leave over start (the writes before k landed: a flush separates them,
// which the test checks the engine issues), write k torn into a prefix
// or a suffix of its sectors, or into any pair of a first and another
// sector.
func tornStates(start []byte, ws [][]byte) [][]byte {
	var out [][]byte
	cur := append([]byte(nil), start...)
	for _, w := range ws {
		n := len(w) / format.HeaderSector
		apply := func(sectors ...int) {
			s := append([]byte(nil), cur...)
			for _, i := range sectors {
				copy(s[i*format.HeaderSector:(i+1)*format.HeaderSector], w[i*format.HeaderSector:])
			}
			out = append(out, s)
		}
		for j := 0; j <= n; j++ {
			var pre, suf []int
			for i := range j {
				pre = append(pre, i)
				suf = append(suf, n-1-i)
			}
			apply(pre...)
			apply(suf...)
		}
		for i := 1; i < n && i < 8; i++ {
			apply(0, i)
			apply(i)
		}
		copy(cur, w)
	}
	return out
}

// TestHeaderRewriteTornAnywhere: a header rewrite that moves what the
// header reads past its first sector (an upgrade growing the extension
// list, a new backing file name, a downgrade) is planned so that a power
// cut tearing its writes into any sectors leaves the old header or the
// new one whole: the backing file is the old one or the new one and
// reads through, for us and for QEMU (FM6). A single-write rewrite let a
// torn write keep the new first sector over the old name, so that QEMU
// read the image without its backing file (found by review).
func TestHeaderRewriteTornAnywhere(t *testing.T) {
	t.Parallel()
	// Past the first sector, in directories (a path component has at
	// most 255 bytes).
	long := strings.Repeat("a-much-longer-backing-file-dir/", 18) + "b"
	cases := []struct {
		name       string
		co         CreateOptions
		oldB, newB string
		op         func(im *Image, dir string) error
	}{
		{"upgrade", CreateOptions{Compat: "0.10"}, "b1", "b1", func(im *Image, _ string) error { return im.SetVersion(3) }},
		{"upgrade-long-name", CreateOptions{Compat: "0.10"}, long, long, func(im *Image, _ string) error { return im.SetVersion(3) }},
		{"downgrade", CreateOptions{}, "b1", "b1", func(im *Image, _ string) error { return im.SetVersion(2) }},
		{"downgrade-long-name", CreateOptions{}, long, long, func(im *Image, _ string) error { return im.SetVersion(2) }},
		{"rename-longer", CreateOptions{}, "b1", long, func(im *Image, dir string) error {
			return im.SetBacking(filepath.Join(dir, long), "qcow2")
		}},
		{"rename-shorter", CreateOptions{}, long, "b1", func(im *Image, dir string) error {
			return im.SetBacking(filepath.Join(dir, "b1"), "qcow2")
		}},
		{"rename-raw", CreateOptions{}, "b1", "b2", func(im *Image, dir string) error {
			return im.SetBacking(filepath.Join(dir, "b2"), "raw")
		}},
		{"rename-twice", CreateOptions{}, long, long + "2", func(im *Image, dir string) error {
			if err := im.SetBacking(filepath.Join(dir, long+"1"), "qcow2"); err != nil {
				return err
			}
			return im.SetBacking(filepath.Join(dir, long+"2"), "qcow2")
		}},
		{"drop-backing", CreateOptions{}, long, "", func(im *Image, _ string) error { return im.SetBacking("", "") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := testkit.Dir(t)
			const size = 1 << 20
			// Every backing file holds pattern 7 in its first 64 KiB,
			// as qcow2 or as raw: whichever the header names, the
			// overlay reads the pattern there.
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(long)), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, b := range []string{"b1", long, long + "1", long + "2"} {
				p := filepath.Join(dir, b)
				if err := Create(p, CreateOptions{Size: size}); err != nil {
					t.Fatal(err)
				}
				im, err := Open(p, Options{})
				if err != nil {
					t.Fatal(err)
				}
				writeAt(t, im, 0, bytes.Repeat([]byte{7}, 64<<10))
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
			}
			raw := bytes.Repeat([]byte{7}, 64<<10)
			if err := os.WriteFile(filepath.Join(dir, "b2"), append(raw, make([]byte, size-len(raw))...), 0o644); err != nil {
				t.Fatal(err)
			}
			co := c.co
			co.Size, co.ClusterSize = size, 4096
			co.BackingFile, co.BackingFormat = filepath.Join(dir, c.oldB), "qcow2"
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, co); err != nil {
				t.Fatal(err)
			}
			rec := &headerRec{Device: mem, cs: 4096}
			im, err := OpenDevice(rec, Options{NoBacking: true})
			if err != nil {
				t.Fatal(err)
			}
			writeAt(t, im, 256<<10, bytes.Repeat([]byte{9}, 4096))
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			rec.mu.Lock()
			rec.writes = nil
			rec.mu.Unlock()
			start := append([]byte(nil), mem.Bytes()[:4096]...)
			if err := c.op(im, dir); err != nil {
				t.Fatal(err)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if rec.unflushd != 0 {
				t.Fatalf("%d header writes followed another with no flush between", rec.unflushd)
			}
			final := mem.Bytes()
			states := tornStates(start, rec.writes)
			t.Logf("%d header writes, %d torn states", len(rec.writes), len(states))
			names := map[string]bool{filepath.Join(dir, c.oldB): true, filepath.Join(dir, c.newB): true}
			if c.newB == "" {
				names[""] = true
			}
			if c.name == "rename-twice" {
				names[filepath.Join(dir, long+"1")] = true
			}
			qemuChecked := 0
			for i, s := range states {
				img := append(append([]byte(nil), s...), final[4096:]...)
				h, err := format.ParseHeader(img[:4096])
				if err != nil {
					t.Fatalf("state %d: header does not parse: %v", i, err)
				}
				if !names[h.BackingFile] {
					t.Fatalf("state %d: backing file %q, want one of %v", i, h.BackingFile, names)
				}
				want := byte(7)
				if h.BackingFile == "" {
					want = 0
				}
				p := filepath.Join(dir, fmt.Sprintf("torn%d.qcow2", i))
				if err := os.WriteFile(p, img, 0o644); err != nil {
					t.Fatal(err)
				}
				tim, err := Open(p, Options{ReadOnly: true})
				if err != nil {
					t.Fatalf("state %d: open with its backing file: %v", i, err)
				}
				got := make([]byte, 4096)
				if _, err := tim.ReadAt(got, 4096); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{want}, 4096)) {
					t.Fatalf("state %d (backing %q): backing data not read through: %v", i, h.BackingFile, err)
				}
				tim.Close()
				// QEMU too, on a sample (each state is a process).
				if testkit.HaveQemu() && (i%7 == 0 || i == len(states)-1) {
					qemuChecked++
					out, err := exec.Command("qemu-io", "-r", "-c", fmt.Sprintf("read -P %d 4k 4k", want), "-c", "read -P 9 256k 4k", p).CombinedOutput()
					if err != nil || strings.Contains(string(out), "fail") {
						t.Fatalf("state %d (backing %q): qemu-io: %v\n%s", i, h.BackingFile, err, out)
					}
				}
				os.Remove(p)
			}
			if qemuChecked == 0 && testkit.HaveQemu() {
				t.Error("no state checked by QEMU")
			}
		})
	}
}
