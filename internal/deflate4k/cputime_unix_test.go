//go:build unix

package deflate4k

import "syscall"

// cpuSeconds returns the process's user+system CPU time. Benchmarks report
// throughput per CPU second as well as per wall second, since shared CI
// machines are often oversubscribed.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
