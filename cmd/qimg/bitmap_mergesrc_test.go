package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestBitmap_MergeSourceLikeQemu: bitmap --merge -b opens its source as
// qemu-img does: before any operation runs (a source that cannot be
// opened changes nothing; qimg had cleared or disabled the bitmap, or
// added one, before it failed), and without its backing files (a
// missing one does not matter, and the image itself as the source's
// backing file is no lock conflict: merging an overlay's bitmap into
// its base failed).
func TestBitmap_MergeSourceLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, tool := range []string{"qemu-img", "qimg"} {
		dir := filepath.Join(d, tool)
		p := func(n string) string { return filepath.Join(dir, n) }
		testkit.MustRun(t, "mkdir", "-p", dir)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("a.qcow2"), "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", p("a.qcow2"), "b1")
		testkit.MustRun(t, "qemu-io", "-c", "write 1M 64k", p("a.qcow2"))
		state := func() string {
			out, _, _ := testkit.Run(t, "qemu-img", "info", "--output=json", p("a.qcow2"))
			var info struct {
				FormatSpecific struct {
					Data struct{ Bitmaps any }
				} `json:"format-specific"`
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(info.FormatSpecific.Data.Bitmaps) + testkit.DirtyMap(t, p("a.qcow2"), "b1")
		}
		before := state()
		for _, ops := range [][]string{{"--clear"}, {"--disable"}, {"--add"}} {
			name := "b1"
			if ops[0] == "--add" {
				name = "b2"
			}
			args := append(append([]string{"bitmap"}, ops...), "--merge", "src", "-b", p("missing.qcow2"), p("a.qcow2"), name)
			if _, e, code := runImg(t, tool, args...); code != 1 {
				t.Errorf("%s %v: exit %d (%s), want 1", tool, ops, code, e)
			}
			if after := state(); after != before {
				t.Errorf("%s %v changed the bitmaps: %s, was %s", tool, ops, after, before)
			}
		}
		// A source whose backing file is gone.
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("gone.qcow2"), "4M")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", p("o.qcow2"))
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", p("o.qcow2"), "src")
		testkit.MustRun(t, "qemu-io", "-c", "write 2M 64k", p("o.qcow2"))
		if err := os.Remove(p("gone.qcow2")); err != nil {
			t.Fatal(err)
		}
		if _, e, code := runImg(t, tool, "bitmap", "--merge", "src", "-b", p("o.qcow2"), p("a.qcow2"), "b1"); code != 0 {
			t.Errorf("%s: merge from a source without its backing file: exit %d (%s)", tool, code, e)
		}
		// An overlay's bitmap into its base.
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", p("top.qcow2"))
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", p("top.qcow2"), "tb")
		testkit.MustRun(t, "qemu-io", "-c", "write 3M 64k", p("top.qcow2"))
		if _, e, code := runImg(t, tool, "bitmap", "--merge", "tb", "-b", p("top.qcow2"), p("a.qcow2"), "b1"); code != 0 {
			t.Errorf("%s: merge from the overlay into its base: exit %d (%s)", tool, code, e)
		}
		testkit.QemuCheck(t, p("a.qcow2"))
	}
	if q, o := testkit.DirtyMap(t, filepath.Join(d, "qemu-img", "a.qcow2"), "b1"), testkit.DirtyMap(t, filepath.Join(d, "qimg", "a.qcow2"), "b1"); q != o {
		t.Errorf("b1 after the merges:\n%s\nqemu-img's:\n%s", o, q)
	}
}
