package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An image left dirty with lazy refcounts keeps its bitmaps through the
// repair that a writable open runs, as QEMU's open does: those IN_USE
// stay so (a crashed writer's), valid ones are maintained. Before, the
// repair's header write cleared their autoclear bit: every bitmap was
// lost and its clusters leaked.
func TestBitmaps_DirtyImageRepairKeepsThemLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	for _, crashed := range []bool{true, false} {
		dir := t.TempDir()
		base := filepath.Join(dir, "base.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", base, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4k", base, "b0")
		if crashed {
			// A writer that dies: dirty, the bitmap IN_USE, refcounts
			// owed.
			testkit.Run(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 1M 64k", "-c", "abort", "-f", "qcow2", base)
		} else {
			// Only the dirty bit: the bitmap valid.
			testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-f", "qcow2", base)
			raw, err := os.ReadFile(base)
			if err != nil {
				t.Fatal(err)
			}
			raw[79] |= 1 // incompatible_features: dirty
			if err := os.WriteFile(base, raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
		for _, p := range []string{theirs, ours} {
			testkit.MustRun(t, "cp", base, p)
		}
		testkit.MustRun(t, "qemu-io", "-c", "write -P 3 2M 4k", "-f", "qcow2", theirs)
		im, err := Open(ours, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(bytes.Repeat([]byte{3}, 4096), 2<<20); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, ours)
		testkit.MustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", theirs, ours)
		a, b := qemuBitmaps(t, theirs), qemuBitmaps(t, ours)
		if a != b || !strings.Contains(b, `"b0"`) {
			t.Errorf("crashed %v: qemu-img info bitmaps:\nqemu-io: %s\nours:    %s", crashed, a, b)
		}
		if !crashed {
			if a, b := dirtyMap(t, theirs, "b0"), dirtyMap(t, ours, "b0"); a != b {
				t.Errorf("bitmap b0:\nqemu-io:\n%s\nours:\n%s", a, b)
			}
		}
	}
}
