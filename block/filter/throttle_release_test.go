package filter

import (
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
)

// TestThrottle_ReleaseWakesWaiters: Release (and Close) let the requests
// waiting for the limits through at once: at 1 IOPS a backlog of 30
// requests kept a forced qnbd shutdown waiting for half a minute.
func TestThrottle_ReleaseWakesWaiters(t *testing.T) {
	for _, how := range []string{"release", "close"} {
		m := memdev.New(memdev.Options{})
		if err := m.Truncate(1 << 20); err != nil {
			t.Fatal(err)
		}
		th := NewThrottle(m, ThrottleLimits{IOPSTotal: 1}, nil)
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				th.Readv(int64(i)*4096, [][]byte{make([]byte, 4096)})
			}()
		}
		time.Sleep(100 * time.Millisecond)
		if how == "release" {
			th.Release()
		} else {
			th.Close()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: throttled requests still waiting 5 s later (a backlog of ~30 s)", how)
		}
		if how == "release" {
			start := time.Now() // and later requests do not wait either
			for i := range 10 {
				th.Readv(int64(i)*4096, [][]byte{make([]byte, 4096)})
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("requests after Release waited %v", d)
			}
		}
	}
}
