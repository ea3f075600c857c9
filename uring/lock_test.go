//go:build linux

package uring

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// The permissions QEMU 7.2 takes for a qcow2 image opened read-write, and
// read-only (qemu-io, qemu-img): measured in /proc/locks.
const (
	rwPerm   = block.PermRead | block.PermWrite | block.PermResize
	rwShared = block.PermRead | block.PermWriteUnchanged
	roPerm   = block.PermRead
	roShared = block.PermRead | block.PermWriteUnchanged
)

func lockTestFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func openLocked(t *testing.T, path string, ro bool, perm, shared block.Perm) (*File, error) {
	t.Helper()
	f, err := Open(path, Options{ReadOnly: ro, Backend: Threads})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Lock(perm, shared); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func TestLock_Conflicts(t *testing.T) {
	p := lockTestFile(t)
	w, err := openLocked(t, p, false, rwPerm, rwShared)
	if err != nil {
		t.Fatal(err)
	}
	// A second writer needs write, which the first does not share.
	_, err = openLocked(t, p, false, rwPerm, rwShared)
	var le *block.LockError
	if !errors.As(err, &le) || le.Perm != block.PermWrite || le.Shared || !errors.Is(err, block.ErrLocked) {
		t.Fatalf("second writer: %v, want a write lock error", err)
	}
	if got := err.Error(); got != `Failed to get "write" lock` {
		t.Fatalf("message %q", got)
	}
	// A reader does not share write, which the writer holds.
	_, err = openLocked(t, p, true, roPerm, roShared)
	if !errors.As(err, &le) || le.Perm != block.PermWrite || !le.Shared {
		t.Fatalf("reader: %v, want a shared write lock error", err)
	}
	// Force-share (-U): read only, everything shared: no conflict.
	r, err := openLocked(t, p, true, roPerm, block.PermAll)
	if err != nil {
		t.Fatalf("force-share reader: %v", err)
	}
	r.Close()
	// Closing the writer releases its locks.
	w.Close()
	r1, err := openLocked(t, p, true, roPerm, roShared)
	if err != nil {
		t.Fatalf("reader after the writer closed: %v", err)
	}
	r2, err := openLocked(t, p, true, roPerm, roShared)
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	// Readers do not share write: a writer is refused while they hold it.
	if _, err = openLocked(t, p, false, rwPerm, rwShared); !errors.As(err, &le) || le.Perm != block.PermWrite || le.Shared {
		t.Fatalf("writer beside readers: %v", err)
	}
	r1.Close()
	r2.Close()
}

// A failed Lock keeps the locks held before it.
func TestLock_FailureKeepsOldLocks(t *testing.T) {
	p := lockTestFile(t)
	a, err := openLocked(t, p, true, roPerm, roShared)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := openLocked(t, p, true, roPerm, block.PermAll)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// b asks to stop sharing read with a: a conflict (a reads).
	if err := b.Lock(roPerm, roShared&^block.PermRead); err == nil {
		t.Fatal("b unshared read beside a reader")
	}
	// b still holds its read permission: a writer that does not share
	// read is refused because of it... and a cannot be told apart, so
	// check b's byte directly through a third description.
	c, err := Open(p, Options{ReadOnly: true, Backend: Threads})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held, err := block.LockedByOther(c.fd, block.LockPermBase)
	if err != nil || !held {
		t.Fatalf("read permission byte after a failed Lock: held %v, %v", held, err)
	}
	a.Close()
	if err := b.Lock(roPerm, roShared&^block.PermRead); err != nil {
		t.Fatalf("after a closed: %v", err)
	}
}

// QEMU and qring see each other's locks, both ways.
func TestLock_QEMU(t *testing.T) {
	testkit.NeedQemu(t)
	const qio = "qemu-io"
	p := lockTestFile(t)
	// qemu-io holds the write lock while it sleeps.
	cmd := exec.Command(qio, "-f", "raw", "-c", "sleep 100000", p)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	testkit.WaitLockByte(t, p, block.LockPermBase+1) // qemu-io's write permission
	// QEMU's raw writer shares everything but holds write: a reader that
	// does not share write is refused.
	var le *block.LockError
	_, err := openLocked(t, p, true, roPerm, roShared)
	errors.As(err, &le)
	if le == nil || le.Perm != block.PermWrite || !le.Shared {
		t.Fatalf("beside qemu-io: %v, want a shared write lock error", err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	// qring holds the lock of a qcow2 writer; qemu-io may not write.
	w, err := openLocked(t, p, false, rwPerm, rwShared)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(qio, "-f", "raw", "-c", "write 0 4k", p).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `Failed to get "write" lock`) {
		t.Fatalf("qemu-io beside a locked writer: %v\n%s", err, out)
	}
	out, err = exec.Command(qio, "-r", "-U", "-f", "raw", "-c", "read 0 4k", p).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io -U beside a locked writer: %v\n%s", err, out)
	}
	w.Close()
	out, err = exec.Command(qio, "-f", "raw", "-c", "write 0 4k", p).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io after close: %v\n%s", err, out)
	}
}
