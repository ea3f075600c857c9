package looptest

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// FillFS leaves about free bytes available in dir's file system: a
// filler file (fallocated and synced) takes the rest, removed at t's
// cleanup. For tests of what happens when the space runs out.
func FillFS(t testing.TB, dir string, free int64) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	os.Remove(p)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail <= free {
		t.Fatalf("only %d bytes free, want to leave %d", avail, free)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, avail-free); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
}
