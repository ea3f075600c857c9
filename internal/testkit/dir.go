package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// FailedRoot is where Dir and KeepFile put their directories:
// $TMPDIR/qring-failed.
func FailedRoot() string { return filepath.Join(os.TempDir(), "qring-failed") }

// Dir returns a new directory for t's images, FailedRoot()/<test
// name>-<random>. When t passes the directory is removed; when it fails
// the directory is kept and its path logged, so the images a check
// rejected can be examined. The directory lives there from the start: a
// test that crashes or times out leaves it too. Cleanups registered after
// Dir (closing and checking an image) run before the decision.
func Dir(t testing.TB) string {
	t.Helper()
	return KeepDir(t, FailedRoot(), dirName(t.Name())+"-")
}

// KeepDir is Dir with the root and the name prefix chosen by the caller
// (the torture suite keeps its cases under its own root, named by seed
// and configuration).
func KeepDir(t testing.TB, root, prefix string) string {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(root, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("test failed: its files are kept in %s", dir)
			return
		}
		auditHook(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	return dir
}

// KeepFile writes data to a new directory FailedRoot()/<test
// name>-<random>/name and returns the file's path, for a test that checks
// many throwaway images and keeps only the one that failed. The file is
// kept whatever the test's outcome: call it on failure.
func KeepFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(FailedRoot(), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(FailedRoot(), dirName(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dirName turns a test name into a file name: characters other than
// letters, digits, '.', '-' and '_' become '_', and the result is at most
// 64 bytes.
func dirName(name string) string {
	s := []byte(name)
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			s[i] = '_'
		}
	}
	return strings.TrimLeft(string(s[:min(len(s), 64)]), ".")
}

// auditHook hands dir to the image audit's checker before its removal
// when make audit-images runs the tests (internal/testkit/audit).
func auditHook(dir string) {
	if cmd := os.Getenv("QRING_AUDIT_CMD"); cmd != "" {
		exec.Command(cmd, dir).Run()
	}
}
