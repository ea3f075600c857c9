package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// The kernel's own file systems over qnbd, the most demanding client
// there is (journal commits with flushes, discards, writes of every size
// in parallel): nbdfuse shows the export as a file, a loop device over
// it carries the file system. Needs root, FUSE and loop devices (the
// tests skip without them: a kernel facility, not a package).

// kernelFSConfig is a file system on an image made with create options.
type kernelFSConfig struct {
	name, mkfs, fsck, create string
	qnbd                     []string
}

var kernelFSConfigs = []kernelFSConfig{
	{"ext4", "mkfs.ext4", "e2fsck", "cluster_size=65536", []string{"--discard=unmap"}},
	{"xfs-xl2", "mkfs.xfs", "xfs_repair", "cluster_size=131072,extended_l2=on", []string{"--discard=unmap", "--detect-zeroes=unmap"}},
	{"ext4-lazy-4k", "mkfs.ext4", "e2fsck", "cluster_size=4096,lazy_refcounts=on", nil},
}

// setUp creates the configuration's 1 GiB image with qimg in a new
// directory d and returns both and qnbd's arguments to serve it.
func (c kernelFSConfig) setUp(t *testing.T) (d, img string, args []string) {
	t.Helper()
	need(t, c.mkfs, c.fsck)
	d = shortDir(t)
	img = filepath.Join(d, "disk.qcow2")
	sh(t, filepath.Join(bin, "qimg"), "create", "-q", "-f", "qcow2", "-o", c.create, img, "1G")
	return d, img, append(slices.Clip(c.qnbd), "-t", "-f", "qcow2", img)
}

// needKernelFS skips t where root or the kernel facilities are missing.
func needKernelFS(t *testing.T) {
	need(t, "qemu-img", "nbdfuse")
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount, losetup)")
	}
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			t.Skipf("no %s", dev)
		}
	}
}

// TestKernelFileSystem: a tree of files is written, partly deleted and
// overwritten in place, trimmed and synced; then the file system's own
// checker finds it clean, qemu-img check and qimg check find the image
// clean, and the files read back through QEMU (qemu-img convert to raw,
// mounted read-only) hold what was written.
func TestKernelFileSystem(t *testing.T) {
	needKernelFS(t)
	for _, c := range kernelFSConfigs {
		t.Run(c.name, func(t *testing.T) {
			d, img, args := c.setUp(t)
			s := startUnix(t, d, "", args...)
			k := stackUp(t, d, true, c.mkfs)
			rng := rand.New(rand.NewPCG(7, 11))
			want := writeTree(t, rng, k.mnt, "", 120)
			runT(t, "sync", "-f", k.mnt)
			churn(t, rng, k.mnt, want)
			runT(t, "fstrim", k.mnt)
			k.down(true)
			fsckClean(t, c.fsck, k.disk)
			k.unfuse(true)
			s.stop()
			check(t, img)
			readBackQemu(t, d, img, c.fsck, want)
		})
	}
}

// TestKernelFileSystemServerKilled: the server is killed (SIGKILL)
// while the file system writes; whatever it had acknowledged before the
// file system's last completed sync is durable. After a restart the
// file system mounts (its journal replays), every file synced before
// the kill reads back as written, the file system's checker finds it
// clean, and the image has no corruption (leaks allowed).
func TestKernelFileSystemServerKilled(t *testing.T) {
	needKernelFS(t)
	for _, c := range kernelFSConfigs {
		t.Run(c.name, func(t *testing.T) {
			d, img, args := c.setUp(t)
			s := startUnix(t, d, "", args...)
			k := stackUp(t, d, true, c.mkfs)
			rng := rand.New(rand.NewPCG(3, 5))
			want := writeTree(t, rng, k.mnt, "synced", 60)
			churn(t, rng, k.mnt, want)
			runT(t, "sync", "-f", k.mnt)

			// More files, unsynced, while the server dies under them.
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := rand.New(rand.NewPCG(9, 9))
				for i := 0; i < 400; i++ {
					b := make([]byte, 1+r.IntN(256<<10))
					name := filepath.Join(k.mnt, "late", fmt.Sprintf("g%03d", i))
					if os.MkdirAll(filepath.Dir(name), 0o755) != nil || os.WriteFile(name, b, 0o644) != nil {
						return
					}
					if i%16 == 0 {
						// Some flushes in flight at the kill too
						// (a directory's fsync commits the journal).
						if f, err := os.Open(filepath.Dir(name)); err == nil {
							f.Sync()
							f.Close()
						}
					}
				}
			}()
			time.Sleep(300 * time.Millisecond)
			s.cmd.Process.Kill()
			<-s.done
			<-done
			k.down(false)
			k.unfuse(false)

			s = startUnix(t, d, "", args...)
			k = stackUp(t, d, false, c.mkfs)
			for name, b := range want {
				got, err := os.ReadFile(filepath.Join(k.mnt, name))
				if err != nil {
					t.Fatalf("%s, synced before the kill: %v", name, err)
				}
				if !bytes.Equal(got, b) {
					t.Errorf("%s, synced before the kill: %d bytes read back differ from the %d written", name, len(got), len(b))
				}
			}
			k.down(true)
			fsckClean(t, c.fsck, k.disk)
			k.unfuse(true)
			s.stop()
			checkNoCorruption(t, img)
			readBackQemu(t, d, img, c.fsck, want)
		})
	}
}

// kstack is nbdfuse's file of an export, a loop device over it and the
// file system mounted from it.
type kstack struct {
	t                  *testing.T
	fuseDir, mnt, disk string
	loop               string
	fuse               *exec.Cmd
	fuseErr            bytes.Buffer
	fuseDone           chan error
	mounted, fuseUp    bool
}

// stackUp shows the export at d's socket as a file, makes a file system
// on it with mkfs when fresh, and mounts it (with discard; mkfs names
// the file system).
func stackUp(t *testing.T, d string, fresh bool, mkfs string) *kstack {
	t.Helper()
	k := &kstack{t: t, fuseDir: filepath.Join(d, "fuse"), mnt: filepath.Join(d, "mnt"), fuseDone: make(chan error, 1)}
	k.disk = filepath.Join(k.fuseDir, "disk")
	for _, p := range []string{k.fuseDir, k.mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k.fuse = exec.Command("nbdfuse", k.disk, "--unix", filepath.Join(d, "nbd.sock"))
	k.fuse.Stderr = &k.fuseErr
	if err := k.fuse.Start(); err != nil {
		t.Fatal(err)
	}
	k.fuseUp = true
	go func() { k.fuseDone <- k.fuse.Wait() }()
	t.Cleanup(func() { // best effort, if the test did not take it down
		k.down(false)
		k.unfuse(false)
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, err := os.Stat(k.disk); err == nil && st.Size() == 1<<30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse does not show the export\n%s", k.fuseErr.String())
		}
	}
	if fresh {
		if mkfs == "mkfs.ext4" {
			// -F twice: no questions about a file that is not a
			// block device.
			runT(t, mkfs, "-q", "-F", "-F", k.disk)
		} else {
			runT(t, mkfs, "-q", "-f", k.disk)
		}
	}
	out, err := cmdOut(60*time.Second, "losetup", "-f", "--show", k.disk)
	if err != nil {
		t.Skipf("no loop device over the FUSE file (%v): %s", err, out)
	}
	k.loop = strings.TrimSpace(out)
	opts := "discard"
	if mkfs == "mkfs.xfs" {
		// After a kill the old mount may linger (lazily unmounted) with
		// the same UUID, which XFS refuses to mount twice.
		opts += ",nouuid"
	}
	if out, err := cmdOut(120*time.Second, "mount", "-o", opts, k.loop, k.mnt); err != nil {
		if fresh {
			t.Skipf("cannot mount (%v): %s", err, out)
		}
		t.Fatalf("mount after the restart: %v: %s", err, out)
	}
	k.mounted = true
	return k
}

// down unmounts the file system and detaches the loop device; strict
// fails t if either fails (after a kill they may).
func (k *kstack) down(strict bool) {
	k.t.Helper()
	if k.mounted {
		k.mounted = false
		args := []string{k.mnt}
		if !strict {
			args = []string{"-l", k.mnt}
		}
		if out, err := cmdOut(120*time.Second, "umount", args...); err != nil && strict {
			k.t.Fatalf("umount: %v: %s", err, out)
		}
	}
	if k.loop != "" {
		loop := k.loop
		k.loop = ""
		if out, err := cmdOut(60*time.Second, "losetup", "-d", loop); err != nil && strict {
			k.t.Fatalf("losetup -d: %v: %s", err, out)
		}
	}
}

// unfuse unmounts nbdfuse's directory and waits for nbdfuse to exit.
func (k *kstack) unfuse(strict bool) {
	k.t.Helper()
	if !k.fuseUp {
		return
	}
	k.fuseUp = false
	args := []string{k.fuseDir}
	if !strict {
		args = []string{"-l", k.fuseDir}
	}
	if out, err := cmdOut(60*time.Second, "umount", args...); err != nil && strict {
		k.t.Fatalf("umount %s: %v: %s", k.fuseDir, err, out)
	}
	select {
	case <-k.fuseDone:
	case <-time.After(30 * time.Second):
		k.fuse.Process.Kill()
		<-k.fuseDone
		if strict {
			k.t.Fatalf("nbdfuse does not exit after umount\n%s", k.fuseErr.String())
		}
	}
}

// writeTree writes n files under dir/sub (sizes from a byte to 8 MiB,
// random contents) and returns their contents by name.
func writeTree(t *testing.T, rng *rand.Rand, dir, sub string, n int) map[string][]byte {
	t.Helper()
	want := map[string][]byte{}
	for i := 0; i < n; i++ {
		size := 1 + rng.IntN(64<<10)
		if i%10 == 0 {
			size = 1<<20 + rng.IntN(7<<20)
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		name := filepath.Join(sub, fmt.Sprintf("d%d", i%7), fmt.Sprintf("f%03d", i))
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = b
	}
	return want
}

// churn deletes about a third of the files and overwrites part of
// about a third in place (the same clusters written again, through the
// file system's own paths), keeping want up to date.
func churn(t *testing.T, rng *rand.Rand, dir string, want map[string][]byte) {
	t.Helper()
	for name, b := range want {
		switch rng.IntN(3) {
		case 0:
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			delete(want, name)
		case 1:
			off := rng.IntN(len(b))
			n := min(len(b)-off, 1+rng.IntN(256<<10))
			for j := off; j < off+n; j++ {
				b[j] = byte(rng.Uint32())
			}
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
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
}

// readBackQemu converts img to raw with qemu-img, checks the file
// system there and mounts it read-only: the files must hold want.
func readBackQemu(t *testing.T, d, img, fsck string, want map[string][]byte) {
	t.Helper()
	raw, mnt := filepath.Join(d, "disk.raw"), filepath.Join(d, "ro")
	sh(t, "qemu-img", "convert", "-O", "raw", img, raw)
	fsckClean(t, fsck, raw)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "ro,loop"
	if fsck == "xfs_repair" {
		opts += ",nouuid" // the same file system's UUID as the export's
	}
	runT(t, "mount", "-o", opts, raw, mnt)
	defer runT(t, "umount", mnt)
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s: %d bytes read back through qemu-img convert differ from the %d written", name, len(got), len(b))
		}
	}
}

// checkNoCorruption runs qemu-img check and qimg check: leaks allowed
// (exit 0 or 3), corruption never.
func checkNoCorruption(t *testing.T, img string) {
	t.Helper()
	for _, tool := range []string{"qemu-img", filepath.Join(bin, "qimg")} {
		out, errOut, code := testkit.Run(t, tool, "check", img)
		if (code != 0 && code != 3) || strings.Contains(out+errOut, "ERROR") {
			t.Fatalf("%s check %s: exit %d\n%s%s", tool, img, code, errOut, out)
		}
	}
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
