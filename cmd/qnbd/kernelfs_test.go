package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// TestKernelFileSystem: the Linux kernel's own ext4 and XFS over qnbd,
// the most demanding client there is (journal commits with FUA and
// flushes, discards, writes of every size in parallel): nbdfuse shows
// the export as a file, a loop device over it carries the file system.
// A tree of files is written, partly deleted and overwritten in place,
// trimmed and synced; then the file system's own checker finds it
// clean, qemu-img check finds the image clean, and the files read back
// through QEMU (qemu-img convert to raw, mounted read-only) hold what
// was written. Needs root, FUSE and loop devices (skipped without them:
// a kernel facility, not a package).
func TestKernelFileSystem(t *testing.T) {
	need(t, "qemu-img", "nbdfuse")
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount, losetup)")
	}
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			t.Skipf("no %s", dev)
		}
	}
	for _, c := range []struct {
		name, mkfs, fsck, create string
		qnbd                     []string
	}{
		{"ext4", "mkfs.ext4", "e2fsck", "cluster_size=65536", []string{"--discard=unmap"}},
		{"xfs-xl2", "mkfs.xfs", "xfs_repair", "cluster_size=131072,extended_l2=on", []string{"--discard=unmap", "--detect-zeroes=unmap"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.mkfs); err != nil {
				testkit.Missing(t, c.mkfs+" not installed")
			}
			kernelFS(t, c.mkfs, c.fsck, c.create, c.qnbd)
		})
	}
}

func kernelFS(t *testing.T, mkfs, fsck, createOpts string, qnbdArgs []string) {
	d := shortDir(t)
	img := filepath.Join(d, "disk.qcow2")
	sh(t, filepath.Join(bin, "qimg"), "create", "-q", "-f", "qcow2", "-o", createOpts, img, "1G")
	s := startUnix(t, d, "", append(qnbdArgs, "-t", "-f", "qcow2", img)...)
	sock := filepath.Join(d, "nbd.sock")

	fuseDir, mnt := filepath.Join(d, "fuse"), filepath.Join(d, "mnt")
	for _, p := range []string{fuseDir, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fuse := exec.Command("nbdfuse", filepath.Join(fuseDir, "disk"), "--unix", sock)
	var fuseErr bytes.Buffer
	fuse.Stderr = &fuseErr
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	fuseDone := make(chan error, 1)
	go func() { fuseDone <- fuse.Wait() }()
	disk := filepath.Join(fuseDir, "disk")
	var loop string
	mounted, fuseMounted := false, true
	t.Cleanup(func() { // best effort, in the order things were set up
		if mounted {
			exec.Command("umount", "-l", mnt).Run()
		}
		if loop != "" {
			exec.Command("losetup", "-d", loop).Run()
		}
		if fuseMounted {
			exec.Command("umount", "-l", fuseDir).Run()
			select {
			case <-fuseDone:
			case <-time.After(10 * time.Second):
				fuse.Process.Kill()
			}
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, err := os.Stat(disk); err == nil && st.Size() == 1<<30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse does not show the export\n%s", fuseErr.String())
		}
	}

	if mkfs == "mkfs.ext4" {
		// -F twice: no questions about a file that is not a block
		// device.
		runT(t, mkfs, "-q", "-F", "-F", disk)
	} else {
		runT(t, mkfs, "-q", "-f", disk)
	}
	out, err := cmdOut(60*time.Second, "losetup", "-f", "--show", disk)
	if err != nil {
		t.Skipf("no loop device over the FUSE file (%v): %s", err, out)
	}
	loop = strings.TrimSpace(out)
	if out, err := cmdOut(60*time.Second, "mount", "-o", "discard", loop, mnt); err != nil {
		t.Skipf("cannot mount (%v): %s", err, out)
	}
	mounted = true

	// The files: sizes from a few bytes to 8 MiB, random contents.
	rng := rand.New(rand.NewPCG(7, 11))
	want := map[string][]byte{}
	for i := 0; i < 120; i++ {
		n := 1 + rng.IntN(64<<10)
		if i%10 == 0 {
			n = 1<<20 + rng.IntN(7<<20)
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		name := filepath.Join(fmt.Sprintf("d%d", i%7), fmt.Sprintf("f%03d", i))
		if err := os.MkdirAll(filepath.Join(mnt, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mnt, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = b
	}
	runT(t, "sync", "-f", mnt)
	// Delete a third, overwrite parts of others in place (the same
	// clusters written again, through the file system's own paths).
	for name, b := range want {
		switch rng.IntN(3) {
		case 0:
			if err := os.Remove(filepath.Join(mnt, name)); err != nil {
				t.Fatal(err)
			}
			delete(want, name)
		case 1:
			off := rng.IntN(len(b))
			n := min(len(b)-off, 1+rng.IntN(256<<10))
			for j := off; j < off+n; j++ {
				b[j] = byte(rng.Uint32())
			}
			f, err := os.OpenFile(filepath.Join(mnt, name), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(b[off:off+n], int64(off)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	runT(t, "fstrim", mnt)
	runT(t, "umount", mnt)
	mounted = false
	runT(t, "losetup", "-d", loop)
	loop = ""
	fsckClean(t, fsck, disk)
	runT(t, "umount", fuseDir)
	fuseMounted = false
	select {
	case <-fuseDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("nbdfuse does not exit after umount\n%s", fuseErr.String())
	}
	s.stop()
	check(t, img)

	// Read back through QEMU: its raw conversion, mounted read-only.
	raw := filepath.Join(d, "disk.raw")
	sh(t, "qemu-img", "convert", "-O", "raw", img, raw)
	fsckClean(t, fsck, raw)
	runT(t, "mount", "-o", "ro,loop", raw, mnt)
	mounted = true
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s: %d bytes read back through qemu-img convert differ from the %d written", name, len(got), len(b))
		}
	}
	runT(t, "umount", mnt)
	mounted = false
}

// cmdOut runs a command with a timeout (a stuck FUSE request must not
// hang the test run) and returns its combined output.
func cmdOut(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// runT is cmdOut that fails t.
func runT(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := cmdOut(120*time.Second, name, args...); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// fsckClean runs the file system's checker without repairing (e2fsck
// -fn, xfs_repair -n -f for a file) and fails t unless it is clean.
func fsckClean(t *testing.T, fsck, file string) {
	t.Helper()
	args := []string{"-fn", file}
	if fsck == "xfs_repair" {
		args = []string{"-n", "-f", file}
	}
	if out, err := cmdOut(120*time.Second, fsck, args...); err != nil {
		t.Fatalf("%s %s: %v\n%s", fsck, file, err, out)
	}
}
