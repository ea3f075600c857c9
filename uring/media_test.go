//go:build linux

package uring

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// fakeSysfs builds dev/block/<majmin> -> devices/<name> with the given
// files under the device directory, and points sysfsRoot at it.
func fakeSysfs(t *testing.T, majmin, rel string, files map[string]string) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "devices", rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "dev/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(root, "dev/block", majmin)); err != nil {
		t.Fatal(err)
	}
	old := sysfsRoot
	sysfsRoot = root
	t.Cleanup(func() { sysfsRoot = old })
}

func TestBlockMedia(t *testing.T) {
	shm := ""
	var fs unix.Statfs_t
	if unix.Statfs("/dev/shm", &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		shm = filepath.Join("/dev/shm", "qring-media-backing")
		if err := os.WriteFile(shm, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(shm)
	}
	tests := []struct {
		name  string
		rel   string
		files map[string]string
		want  block.Media
	}{
		{"zram", "virtual/block/zram3", map[string]string{"queue/rotational": "0\n"}, block.MediaRAM},
		{"brd", "virtual/block/ram0", map[string]string{"queue/rotational": "0\n"}, block.MediaRAM},
		{"pmem", "platform/ndbus0/pmem1", nil, block.MediaRAM},
		{"nvme", "pci/nvme/nvme0n1", map[string]string{"queue/rotational": "0\n"}, block.MediaSSD},
		{"disk", "pci/sda", map[string]string{"queue/rotational": "1\n"}, block.MediaHDD},
		{"partition", "pci/sdb/sdb1", map[string]string{"partition": "1\n", "../queue/rotational": "1\n"}, block.MediaHDD},
		{"no queue", "virtual/block/dm-0", nil, block.MediaUnknown},
		{"loop over tmpfs", "virtual/block/loop5", map[string]string{"loop/backing_file": shm + "\n", "queue/rotational": "1\n"}, block.MediaRAM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "loop over tmpfs" && shm == "" {
				t.Skip("no tmpfs at /dev/shm")
			}
			fakeSysfs(t, "7:99", tc.rel, tc.files)
			got, why := blockMedia(7, 99, 0)
			if got != tc.want {
				t.Fatalf("got %v (%s), want %v", got, why, tc.want)
			}
		})
	}
	if m, why := blockMedia(1234, 5678, 0); m != block.MediaUnknown {
		t.Fatalf("missing device: %v (%s)", m, why)
	}
}

func TestDetectMediaTmpfs(t *testing.T) {
	var fs unix.Statfs_t
	if unix.Statfs("/dev/shm", &fs) != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	p := filepath.Join("/dev/shm", "qring-media-"+t.Name())
	f, err := Open(p, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	defer f.Close()
	if m, why := f.Media(); m != block.MediaRAM || f.Caps().Media != block.MediaRAM {
		t.Fatalf("tmpfs file: %v (%s)", m, why)
	}
}

func TestWriteMetered(t *testing.T) {
	tests := []struct {
		name   string
		cgroup string            // /proc/self/cgroup
		files  map[string]string // under <sysfs>/fs/cgroup
		want   bool
	}{
		{"none", "0::/\n", nil, false},
		{"v1 bps", "7:blkio:/perf/a\n", map[string]string{"blkio/perf/a/blkio.throttle.write_bps_device": "252:1 150000000\n"}, true},
		{"v1 iops on parent", "7:blkio,io:/perf/a\n", map[string]string{"blkio/perf/blkio.throttle.write_iops_device": "252:1 8000\n"}, true},
		{"v1 other device", "7:blkio:/a\n", map[string]string{"blkio/a/blkio.throttle.write_bps_device": "8:0 150000000\n"}, false},
		{"v2 wbps", "0::/svc\n", map[string]string{"svc/io.max": "252:1 rbps=max wbps=1000000 riops=max wiops=max\n"}, true},
		{"v2 read only", "0::/svc\n", map[string]string{"svc/io.max": "252:1 rbps=1000 wbps=max riops=max wiops=max\n"}, false},
		{"v2 whole disk", "0::/svc\n", map[string]string{"svc/io.max": "252:0 wiops=100\n"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tc.files {
				p := filepath.Join(root, "fs/cgroup", name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cg := filepath.Join(root, "cgroup")
			if err := os.WriteFile(cg, []byte(tc.cgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			oldSys, oldCg := sysfsRoot, procCgroup
			sysfsRoot, procCgroup = root, cg
			defer func() { sysfsRoot, procCgroup = oldSys, oldCg }()
			if got := writeMetered("252:1", "252:0"); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
