package main

import (
	"time"

	"github.com/qring/qring/block"
)

// rateLimited is qemu-img's -r RATE (convert, commit): the writes to the
// device, zeros included, are paced to RATE bytes per second on average
// since the first one.
type rateLimited struct {
	block.Device
	rate  int64
	start time.Time
	done  int64
}

// withRateLimit paces the writes to d at rate bytes per second; rate 0
// is no limit, as in qemu-img.
func withRateLimit(d block.Device, rate int64) block.Device {
	if rate <= 0 {
		return d
	}
	return &rateLimited{Device: d, rate: rate}
}

// pace waits until n more bytes keep the writes at the rate.
func (r *rateLimited) pace(n int64) {
	if r.start.IsZero() {
		r.start = time.Now()
	}
	r.done += n
	due := r.start.Add(time.Duration(float64(r.done) / float64(r.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}

func (r *rateLimited) Writev(off int64, bufs [][]byte) error {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	r.pace(n)
	return r.Device.Writev(off, bufs)
}

func (r *rateLimited) WriteZeroes(off, n int64, flags block.Flags) error {
	r.pace(n)
	return r.Device.WriteZeroes(off, n, flags)
}

// paceCompressed paces a compressed write of n bytes made around the
// device (qcow2.Image.WriteCompressed), if d is rate limited.
func paceCompressed(d block.Device, n int64) {
	if r, ok := d.(*rateLimited); ok {
		r.pace(n)
	}
}

// parseRate reads -r RATE as qemu-img's cvtnum does.
func parseRate(s string) (int64, error) {
	return cvtnum("rate limit", s) // to INT64_MAX
}
