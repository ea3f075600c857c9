//go:build linux

package uring

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWriteZeroesDev: the queue attribute decides (U2): unmap write
// zeroes advertised (> 0) or not (0, absent before 6.17, garbage); a
// partition reads its disk's queue.
func TestWriteZeroesDev(t *testing.T) {
	const attr = "queue/write_zeroes_unmap_max_bytes"
	tests := []struct {
		name  string
		rel   string
		files map[string]string
		want  bool
		why   string
	}{
		{"nvme", "pci0000:00/nvme/nvme0n1", map[string]string{attr: "2199023255040\n"}, true, "nvme0n1 write_zeroes_unmap_max_bytes=2199023255040"},
		{"zram", "virtual/block/zram1", map[string]string{attr: "0\n"}, false, "zram1 write_zeroes_unmap_max_bytes=0"},
		{"old-kernel", "virtual/block/vda", map[string]string{"queue/rotational": "0\n"}, false, "vda: no queue/write_zeroes_unmap_max_bytes"},
		{"garbage", "virtual/block/sdz", map[string]string{attr: "lots\n"}, false, `sdz: bad queue byte count "lots"`},
		{"negative", "virtual/block/sdy", map[string]string{attr: "-1\n"}, false, `sdy: bad queue byte count "-1"`},
		{"partition", "pci0000:00/sda/sda1", map[string]string{"partition": "1\n", "../" + attr: "1048576\n"}, true, "sda write_zeroes_unmap_max_bytes=1048576"},
		{"partition-off", "pci0000:00/sdb/sdb2", map[string]string{"partition": "2\n", "../" + attr: "0\n", attr: "4096\n"}, false, "sdb write_zeroes_unmap_max_bytes=0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fakeSysfs(t, "259:7", tc.rel, tc.files)
			got, why := writeZeroesDev(259, 7)
			if got != tc.want || why != tc.why {
				t.Fatalf("writeZeroesDev = %v, %q; want %v, %q", got, why, tc.want, tc.why)
			}
		})
	}
	fakeSysfs(t, "259:7", "virtual/block/x", nil)
	if got, why := writeZeroesDev(0, 42); got || !strings.HasPrefix(why, "no sysfs entry") {
		t.Fatalf("anonymous device: %v, %q", got, why)
	}
}

// TestWriteZeroesFS: only filesystems known to implement the flag are
// believed (xfs before its release is not: its zero fill would be lost).
func TestWriteZeroesFS(t *testing.T) {
	for _, tc := range []struct {
		magic int64
		ok    bool
		why   string
	}{
		{unix.EXT4_SUPER_MAGIC, true, "ext4"},
		{unix.XFS_SUPER_MAGIC, false, "xfs: not known to support it"},
		{unix.TMPFS_MAGIC, false, "tmpfs"},
		{unix.BTRFS_SUPER_MAGIC, false, "filesystem 0x9123683e: not known to support it"},
	} {
		if ok, why := writeZeroesFS(tc.magic); ok != tc.ok || why != tc.why {
			t.Errorf("writeZeroesFS(%#x) = %v, %q; want %v, %q", tc.magic, ok, why, tc.ok, tc.why)
		}
	}
}

func TestParseQueueBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "0\n": 0, " 512\n": 512, "2199023255040\n": 2199023255040} {
		if n, err := parseQueueBytes([]byte(in)); err != nil || n != want {
			t.Errorf("parseQueueBytes(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"", "\n", "x", "-5", "1.5", "99999999999999999999"} {
		if n, err := parseQueueBytes([]byte(in)); err == nil {
			t.Errorf("parseQueueBytes(%q) = %d, want an error", in, n)
		}
	}
}

func TestKernelAtLeast(t *testing.T) {
	for rel, want := range map[string]bool{
		"6.17.0": true, "6.17": true, "6.17-rc1": true, "6.18.44-fc-v657": true, "7.0.1": true, "10.1": true,
		"6.16.9": false, "6.9.0": false, "5.19.17-generic": false, "6": false, "": false, "x.y": false, "6.x": false,
	} {
		if got := kernelAtLeast(rel, 6, 17); got != want {
			t.Errorf("kernelAtLeast(%q, 6, 17) = %v, want %v", rel, got, want)
		}
	}
	if ok, why := writeZeroesSupport(-1, "6.16.3"); ok || why != "kernel 6.16.3 < 6.17" {
		t.Errorf("old kernel: %v, %q", ok, why)
	}
}
