package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_CutsEmptiedTopLikeQemu: a commit that empties its top
// cuts the file as qemu-img's does (make_completely_empty: version 3,
// no snapshot, no bitmap), and leaves it as long where qemu-img does
// (an internal snapshot, version 2; with a bitmap neither cuts, and
// the bitmaps' own storage at close differs). qimg left every file as
// long as the data it held.
func TestCommit_CutsEmptiedTopLikeQemu(t *testing.T) {
	d := qemuDir(t)
	for _, c := range []struct {
		name  string
		opts  string
		after func(top string)
	}{
		{"plain", "compat=1.1", nil},
		{"snapshot", "compat=1.1", func(top string) { testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", top) }},
		{"v2", "compat=0.10", nil},
	} {
		size := map[string]int64{}
		for _, tool := range []string{"qemu-img", "qimg"} {
			base, top := filepath.Join(d, c.name+tool+"-b.qcow2"), filepath.Join(d, c.name+tool+"-t.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, "-b", base, "-F", "qcow2", top, "64M")
			qio(t, top, "write -P 1 0 8M", "write -P 2 40M 1M")
			if c.after != nil {
				c.after(top)
			}
			if tool == "qemu-img" {
				testkit.MustRun(t, "qemu-img", "commit", "-q", top)
			} else {
				mustQ(t, "commit", "-q", top)
			}
			st, err := os.Stat(top)
			if err != nil {
				t.Fatal(err)
			}
			size[tool] = st.Size()
			qio(t, base, "read -P 1 0 8M", "read -P 2 40M 1M")
		}
		if size["qimg"] != size["qemu-img"] {
			t.Errorf("%s: the committed top is %d bytes long, qemu-img's %d", c.name, size["qimg"], size["qemu-img"])
		}
	}
}
