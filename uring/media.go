//go:build linux

package uring

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// sysfsRoot is /sys; tests point it at a fake tree.
var sysfsRoot = "/sys"

// detectMedia says what stores the file open as fd (U9 in doc.go): a
// file on tmpfs/ramfs is RAM; a block device (or the block device of the
// file's filesystem) is RAM for zram, brd and pmem and for a loop device
// whose backing file is RAM-backed itself, else HDD or SSD by its queue's
// rotational flag. Anything it cannot read (btrfs' anonymous devices,
// network filesystems, dm stacks it cannot resolve) is MediaUnknown.
func detectMedia(fd int) (block.Media, string, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return block.MediaUnknown, "fstat: " + err.Error(), false
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	} else {
		var fs unix.Statfs_t
		if unix.Fstatfs(fd, &fs) == nil && (fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC) {
			return block.MediaRAM, "tmpfs", false
		}
	}
	maj, min := unix.Major(dev), unix.Minor(dev)
	m, why := blockMedia(maj, min, 0)
	devs := []string{fmt.Sprintf("%d:%d", maj, min)}
	if disk := wholeDisk(maj, min); disk != "" {
		devs = append(devs, disk)
	}
	metered := writeMetered(devs...)
	if metered {
		why += ", writes throttled by cgroup"
	}
	return m, why, metered
}

// wholeDisk returns "maj:min" of the disk holding partition maj:min, or "".
func wholeDisk(maj, min uint32) string {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysfsRoot, "dev/block", fmt.Sprintf("%d:%d", maj, min)))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "dev"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// diskDir is the sysfs directory of block device maj:min whose queue/
// serves it: a partition's queue is its disk's.
func diskDir(maj, min uint32) (string, error) {
	sys := filepath.Join(sysfsRoot, "dev/block", fmt.Sprintf("%d:%d", maj, min))
	dir, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return "", fmt.Errorf("no sysfs entry for %d:%d", maj, min)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		dir = filepath.Dir(dir)
	}
	return dir, nil
}

// blockMedia classifies block device maj:min; depth bounds loop chains.
func blockMedia(maj, min uint32, depth int) (block.Media, string) {
	dir, err := diskDir(maj, min)
	if err != nil {
		return block.MediaUnknown, err.Error()
	}
	name := filepath.Base(dir)
	switch {
	case strings.HasPrefix(name, "zram"), strings.HasPrefix(name, "ram"), strings.HasPrefix(name, "pmem"):
		return block.MediaRAM, name
	case strings.HasPrefix(name, "loop") && depth < 4:
		b, err := os.ReadFile(filepath.Join(dir, "loop/backing_file"))
		if err != nil {
			break
		}
		back := strings.TrimSpace(string(b))
		var fs unix.Statfs_t
		if unix.Statfs(back, &fs) == nil && (fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC) {
			return block.MediaRAM, name + " over tmpfs"
		}
		var st unix.Stat_t
		if unix.Stat(back, &st) == nil {
			m, why := blockMedia(unix.Major(st.Dev), unix.Minor(st.Dev), depth+1)
			return m, name + " over " + why
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "queue/rotational"))
	if err != nil {
		return block.MediaUnknown, name + ": no queue/rotational"
	}
	if strings.TrimSpace(string(b)) == "1" {
		return block.MediaHDD, name + " rotational"
	}
	return block.MediaSSD, name + " non-rotational"
}

// procCgroup is /proc/self/cgroup; tests point it elsewhere.
var procCgroup = "/proc/self/cgroup"

// writeMetered reports whether this process's cgroup (or an ancestor)
// limits writes to block device maj:min (U9): cgroup v1
// blkio.throttle.write_{bps,iops}_device or cgroup v2 io.max wbps/wiops.
// For a partition, pass the whole disk too: throttles are per disk.
func writeMetered(devs ...string) bool {
	b, err := os.ReadFile(procCgroup)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var root string
		var files []string
		switch {
		case f[0] == "0" && f[1] == "":
			files = []string{"io.max"}
			root = filepath.Join(sysfsRoot, "fs/cgroup")
			if _, err := os.Stat(filepath.Join(root, "unified")); err == nil {
				root = filepath.Join(root, "unified") // hybrid hierarchy
			}
		case hasController(f[1], "blkio"):
			files = []string{"blkio.throttle.write_bps_device", "blkio.throttle.write_iops_device"}
			root = filepath.Join(sysfsRoot, "fs/cgroup/blkio")
		default:
			continue
		}
		for p := filepath.Clean("/" + f[2]); ; p = filepath.Dir(p) {
			for _, name := range files {
				if throttles(filepath.Join(root, p, name), devs) {
					return true
				}
			}
			if p == "/" {
				break
			}
		}
	}
	return false
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

// throttles reports whether a throttle file has a write limit for one of
// devs: v1 lines are "maj:min value", v2 lines "maj:min rbps=.. wbps=..".
func throttles(path string, devs []string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !slices.Contains(devs, f[0]) {
			continue
		}
		for _, v := range f[1:] {
			k, val, kv := strings.Cut(v, "=")
			if !kv {
				val = k // v1: the value alone
			} else if k != "wbps" && k != "wiops" {
				continue
			}
			if val != "max" && val != "0" {
				return true
			}
		}
	}
	return false
}

// writeZeroesMinKernel is the first Linux release with
// FALLOC_FL_WRITE_ZEROES (6.17, "fs: introduce FALLOC_FL_WRITE_ZEROES to
// fallocate",
// https://git.kernel.org/torvalds/c/7bd43cc79cab3850f34da0a31d5b042b701590ef).
const writeZeroesMinMajor, writeZeroesMinMinor = 6, 17

// writeZeroesSupport says whether FALLOC_FL_WRITE_ZEROES may work on the
// file open as fd (U2), without trying it: the kernel (release, as uname
// -r) is 6.17 or later, the file is a block device or on a filesystem
// known to implement the flag (writeZeroesFS), and the block device under
// the file (the file's own for a device node, else its filesystem's)
// advertises unmap write zeroes, queue/write_zeroes_unmap_max_bytes > 0.
// ext4 and the block layer refuse the flag (EOPNOTSUPP) otherwise
// (https://git.kernel.org/torvalds/c/f4265b8d32c49ff95711e6fef7d05245a2905b30,
// bdev_write_zeroes_unmap_sectors); a refusal all the same is found out
// by the first request. why says what was found.
func writeZeroesSupport(fd int, release string) (bool, string) {
	if !kernelAtLeast(release, writeZeroesMinMajor, writeZeroesMinMinor) {
		return false, "kernel " + release + " < 6.17"
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, "fstat: " + err.Error()
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	} else {
		var fs unix.Statfs_t
		if err := unix.Fstatfs(fd, &fs); err != nil {
			return false, "fstatfs: " + err.Error()
		}
		if ok, why := writeZeroesFS(int64(fs.Type)); !ok {
			return false, why
		}
	}
	return writeZeroesDev(unix.Major(dev), unix.Minor(dev))
}

// writeZeroesFS reports whether a filesystem (statfs f_type) is known to
// implement FALLOC_FL_WRITE_ZEROES from 6.17 on: ext4 only. XFS gained it
// later ("xfs: add support for FALLOC_FL_WRITE_ZEROES", 2026) in a
// release not pinned here; believing it earlier would cost XFS on RAM
// its zero fill (block B9 is read at open) for a refusal at the first
// request. Add a filesystem here with the release that has it.
func writeZeroesFS(fsType int64) (bool, string) {
	switch fsType {
	case unix.EXT4_SUPER_MAGIC:
		return true, "ext4"
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return false, "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return false, "xfs: not known to support it"
	}
	return false, fmt.Sprintf("filesystem %#x: not known to support it", fsType)
}

// writeZeroesDev reads block device maj:min's write_zeroes_unmap_max_bytes
// (absent before 6.17; 0 when the device cannot zero by unmapping).
func writeZeroesDev(maj, min uint32) (bool, string) {
	dir, err := diskDir(maj, min)
	if err != nil {
		return false, err.Error()
	}
	name := filepath.Base(dir)
	b, err := os.ReadFile(filepath.Join(dir, "queue/write_zeroes_unmap_max_bytes"))
	if err != nil {
		return false, name + ": no queue/write_zeroes_unmap_max_bytes"
	}
	n, err := parseQueueBytes(b)
	if err != nil {
		return false, name + ": " + err.Error()
	}
	why := name + " write_zeroes_unmap_max_bytes=" + strconv.FormatInt(n, 10)
	return n > 0, why
}

// parseQueueBytes parses a sysfs queue byte count ("1048576\n").
func parseQueueBytes(b []byte) (int64, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad queue byte count %q", s)
	}
	return n, nil
}

// kernelAtLeast reports whether release ("6.18.44-fc", as uname -r) is
// major.minor or later; an unparsable release is not.
func kernelAtLeast(release string, major, minor int) bool {
	a, rest, ok := strings.Cut(release, ".")
	if !ok {
		return false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	ma, err1 := strconv.Atoi(a)
	mi, err2 := strconv.Atoi(rest[:end])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// kernelRelease is uname -r ("" if uname fails).
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
