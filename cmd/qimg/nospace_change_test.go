package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// TestNoSpace_ChangeMessagesLikeQemu: commands that change an existing
// image and run out of space part-way fail with qemu-img's exit code and
// words, the step that failed and the errno, and leave the images
// consistent, reading as before. qimg said only the errno for a safe
// rebase ("No space left on device" for qemu-img's "Error while writing
// to COW image: No space left on device") and for a downgrade that
// writes zero clusters out ("Failed to turn zero into data clusters:
// ..."), and named a cache's table where a commit failed to empty the
// image it committed ("Could not empty IMG: cache l2: table at 0x370000:
// No space left on device" for "Failed to empty IMG: No space left on
// device"), and a growth that preallocates its new range (full, falloc)
// only "qcow2: preallocating the grown range: No space left on device"
// for "Failed to resize underlying file: Could not write zeros for
// preallocation: ..." ("Could not preallocate new data" for falloc),
// and a snapshot -d that could not write the new snapshot table only the
// errno ("Could not delete snapshot 's1': No space left on device", where
// qemu-img names "Failed to remove snapshot from snapshot list").
// Each tool runs on its own small tmpfs, filled after the
// images are made (the commit's base lies outside it: the copy into it
// succeeds, the emptying of the image, whose tables a snapshot shares,
// does not).
func TestNoSpace_ChangeMessagesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct {
		name string
		prep func(t *testing.T, dir, out string) // out: a directory outside the small file system
		args []string
		want string   // qemu-img's stderr, without its prefix, DIR for the mount point
		read []string // qemu-io reads of DIR/top.qcow2 that pass before and after
		free int64    // the bytes left free
	}{
		{
			name: "commit empties",
			prep: func(t *testing.T, dir, out string) {
				base := filepath.Join(out, "base.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "128M")
				top := filepath.Join(dir, "top.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
				testkit.MustRun(t, "qemu-io", "-c", "write -P 5 0 1M", "-c", "write -P 6 16M 1M", "-c", "write -P 7 100M 1M", top)
				testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", top)
			},
			args: []string{"commit", "DIR/top.qcow2"},
			want: "Failed to empty DIR/top.qcow2: No space left on device",
			read: []string{"read -P 5 0 1M", "read -P 6 16M 1M", "read -P 7 100M 1M"},
		},
		{
			name: "safe rebase",
			prep: func(t *testing.T, dir, _ string) {
				b1, b2, top := filepath.Join(dir, "b1.qcow2"), filepath.Join(dir, "b2.qcow2"), filepath.Join(dir, "top.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b1, "128M")
				testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 2M", "-c", "write -P 1 64M 2M", b1)
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b2, "128M")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", b1, "-F", "qcow2", top)
				testkit.MustRun(t, "qemu-io", "-c", "write -P 9 1M 64k", top)
			},
			args: []string{"rebase", "-b", "DIR/b2.qcow2", "-F", "qcow2", "DIR/top.qcow2"},
			want: "Error while writing to COW image: No space left on device",
			read: []string{"read -P 1 0 1M", "read -P 9 1M 64k", "read -P 1 1088k 960k", "read -P 1 64M 2M"},
		},
		{
			name: "downgrade",
			prep: func(t *testing.T, dir, _ string) {
				base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "128M")
				testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 4M", base)
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
				testkit.MustRun(t, "qemu-io", "-c", "write -z 0 4M", top)
			},
			args: []string{"amend", "-o", "compat=0.10", "DIR/top.qcow2"},
			want: "Failed to turn zero into data clusters: No space left on device",
			read: []string{"read -P 0 0 4M"},
		},
		{
			name: "resize full",
			prep: prepNoSpaceGrow,
			args: []string{"resize", "--preallocation=full", "DIR/top.qcow2", "200M"},
			want: "Failed to resize underlying file: Could not write zeros for preallocation: No space left on device",
			read: []string{"read -P 1 0 1M", "read -P 2 100M 1M"},
			free: 64 << 10,
		},
		{
			name: "resize falloc",
			prep: prepNoSpaceGrow,
			args: []string{"resize", "--preallocation=falloc", "DIR/top.qcow2", "200M"},
			want: "Failed to resize underlying file: Could not preallocate new data: No space left on device",
			read: []string{"read -P 1 0 1M", "read -P 2 100M 1M"},
			free: 64 << 10,
		},
		{
			name: "snapshot delete",
			prep: func(t *testing.T, dir, _ string) {
				// The clusters the older tables held are taken by the
				// last write: the new table needs one past the end.
				top := filepath.Join(dir, "top.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", top, "128M")
				testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", top)
				for _, s := range []string{"s1", "s2", "s3"} {
					testkit.MustRun(t, "qemu-img", "snapshot", "-c", s, top)
				}
				testkit.MustRun(t, "qemu-io", "-c", "write -P 4 32M 4M", "-c", "write -P 5 0 4k", top)
			},
			args: []string{"snapshot", "-d", "s1", "DIR/top.qcow2"},
			want: "Could not delete snapshot 's1': Failed to remove snapshot from snapshot list: No space left on device",
			read: []string{"read -P 5 0 4k", "read -P 1 4k 1020k", "read -P 4 32M 4M"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, tool := range []string{"qemu-img", "qimg"} {
				dir := looptest.SmallTmpfs(t, 8<<20)
				c.prep(t, dir, t.TempDir())
				top := filepath.Join(dir, "top.qcow2")
				reads := func(when string) {
					for _, r := range c.read {
						if _, e, code := testkit.Run(t, "qemu-io", "-r", "-c", r, top); code != 0 || e != "" {
							t.Errorf("%s, %s: qemu-io %q: exit %d %s", tool, when, r, code, e)
						}
					}
				}
				reads("before")
				looptest.FillFS(t, dir, c.free)
				args := make([]string, len(c.args))
				for i, a := range c.args {
					args[i] = strings.ReplaceAll(a, "DIR", dir)
				}
				var e string
				var code int
				if tool == "qemu-img" {
					_, e, code = testkit.Run(t, "qemu-img", args...)
				} else {
					_, e, code = runQ(t, args...)
					e = asQemu(e)
				}
				e = strings.ReplaceAll(strings.TrimSpace(strings.TrimPrefix(e, "qemu-img: ")), dir, "DIR")
				if code != 1 || e != c.want {
					t.Errorf("%s %q: exit %d %q; want exit 1 %q", tool, c.args, code, e, c.want)
				}
				for _, f := range []string{"top.qcow2", "b1.qcow2", "b2.qcow2", "base.qcow2"} {
					if p := filepath.Join(dir, f); exists(p) {
						testkit.QemuCheckNoCorruption(t, p)
					}
				}
				reads("after")
			}
		})
	}
}

// prepNoSpaceGrow makes DIR/top.qcow2, 128 MiB with data at 0 and 100M,
// for a growth that preallocates.
func prepNoSpaceGrow(t *testing.T, dir, _ string) {
	top := filepath.Join(dir, "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", top, "128M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 2 100M 1M", top)
}

// exists reports whether a file is at p.
func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
