package testkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDir: a passing test's directory goes, a failing test's stays under
// FailedRoot, named after the test, and the log says where.
func TestDir(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	for _, fail := range []bool{false, true} {
		f := newFakeT(t, "TestImage/v3 lazy")
		var dir string
		f.run(func(f *fakeT) {
			dir = Dir(f)
			if err := os.WriteFile(filepath.Join(dir, "t.qcow2"), []byte("QFI\xfb"), 0o644); err != nil {
				t.Fatal(err)
			}
			f.failed = fail
		})
		if filepath.Dir(dir) != FailedRoot() || !strings.HasPrefix(filepath.Base(dir), "TestImage_v3_lazy-") {
			t.Errorf("dir %s: not FailedRoot()/TestImage_v3_lazy-*", dir)
		}
		_, err := os.Stat(filepath.Join(dir, "t.qcow2"))
		switch {
		case fail && err != nil:
			t.Errorf("failing test: image not kept: %v", err)
		case fail && (len(f.logs) != 1 || !strings.Contains(f.logs[0], dir)):
			t.Errorf("failing test: log %q does not name %s", f.logs, dir)
		case !fail && !os.IsNotExist(err):
			t.Errorf("passing test: %s not removed (%v)", dir, err)
		}
	}
}

func TestKeepFile(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	p := KeepFile(t, "sweep.qcow2", []byte("img"))
	if b, err := os.ReadFile(p); err != nil || string(b) != "img" || !strings.HasPrefix(p, FailedRoot()+"/TestKeepFile-") {
		t.Errorf("KeepFile = %s: %q %v", p, b, err)
	}
}
