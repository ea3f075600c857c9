package main

// sampler: every 2 ms read /sys/block/vda/stat; per 20 ms window print
// writes completed, mean in-flight, and the fraction of samples at 0.
import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

func stat() []int64 {
	b, _ := os.ReadFile("/sys/block/vda/stat")
	f := strings.Fields(string(b))
	v := make([]int64, len(f))
	for i := range f {
		v[i], _ = strconv.ParseInt(f[i], 10, 64)
	}
	return v
}

func main() {
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	done := make(chan struct{})
	start := time.Now()
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	go func() { cmd.Wait(); close(done) }()
	last := stat()
	win := time.Now()
	var sum, n, zeros int64
	tk := time.NewTicker(2 * time.Millisecond)
	for {
		select {
		case <-done:
			return
		case <-tk.C:
		}
		s := stat()
		sum += s[8]
		n++
		if s[8] == 0 {
			zeros++
		}
		if time.Since(win) >= 20*time.Millisecond {
			fmt.Printf("%5d ms  w %6d  inflight %5.1f  idle %3d%%\n", time.Since(start).Milliseconds(), s[4]-last[4], float64(sum)/float64(n), zeros*100/n)
			last, win, sum, n, zeros = s, time.Now(), 0, 0, 0
		}
	}
}
