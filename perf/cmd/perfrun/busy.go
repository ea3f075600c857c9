package main

import (
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture Go supports (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// machineBusy returns the CPU seconds the whole machine has spent busy
// since boot, from /proc/stat's "cpu" line (proc(5)): user, nice,
// system, irq, softirq and steal; idle and iowait are not busy, and guest
// time is already in user. Work a tool causes outside its process (the
// file system's workqueues converting unwritten extents, block-device
// threads) shows here and not in its getrusage. ok is false when
// /proc/stat cannot be read.
func machineBusy() (secs float64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, true
}
