//go:build linux

package uring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// sysfsRoot is /sys; tests point it at a fake tree.
var sysfsRoot = "/sys"

// detectMedia says what stores the file open as fd (F9 in doc.go): a
// file on tmpfs/ramfs is RAM; a block device (or the block device of the
// file's filesystem) is RAM for zram, brd and pmem and for a loop device
// whose backing file is RAM-backed itself, else HDD or SSD by its queue's
// rotational flag. Anything it cannot read (btrfs' anonymous devices,
// network filesystems, dm stacks it cannot resolve) is MediaUnknown.
func detectMedia(fd int) (block.Media, string) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return block.MediaUnknown, "fstat: " + err.Error()
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	} else {
		var fs unix.Statfs_t
		if unix.Fstatfs(fd, &fs) == nil && (fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC) {
			return block.MediaRAM, "tmpfs"
		}
	}
	return blockMedia(unix.Major(dev), unix.Minor(dev), 0)
}

// blockMedia classifies block device maj:min; depth bounds loop chains.
func blockMedia(maj, min uint32, depth int) (block.Media, string) {
	sys := filepath.Join(sysfsRoot, "dev/block", fmt.Sprintf("%d:%d", maj, min))
	dir, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return block.MediaUnknown, fmt.Sprintf("no sysfs entry for %d:%d", maj, min)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		dir = filepath.Dir(dir) // a partition's queue is its disk's
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
