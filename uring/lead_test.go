//go:build linux

package uring

import (
	"fmt"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// TestFile_NotBehindSlowDataRequest (R2): a request that arrives while
// the leader sleeps in the kernel on data requests that do not complete
// (reads of empty pipes: data requests as slow as the test likes) is
// submitted at once and completes while they are still in the kernel.
// A waiter that was not the leader submitted its own SQE only while no
// data SQE was in the kernel and otherwise left it for the leader's next
// enter, which only a completion brings: on slow media at low depth
// every request waited for the one before it.
func TestFile_NotBehindSlowDataRequest(t *testing.T) {
	for _, c := range configs()[:2] { // ring, ring-direct
		for _, slow := range []int{1, shallow - 1} {
			t.Run(fmt.Sprintf("%s/%d", c.name, slow), func(t *testing.T) {
				f := openTemp(t, c.opt)
				want := pattern(9, 4096)
				if err := f.Writev(0, [][]byte{want}); err != nil {
					t.Fatal(err)
				}
				r := f.io.(*ringIO).r
				pipes := make([][2]int, slow)
				slowDone := make(chan int32, slow)
				for i := range pipes {
					if err := unix.Pipe2(pipes[i][:], unix.O_CLOEXEC); err != nil {
						t.Fatal(err)
					}
					defer unix.Close(pipes[i][0])
					defer unix.Close(pipes[i][1])
					go func() {
						res, err := r.rw(false, pipes[i][0], 0, [][]byte{make([]byte, 1)}, nil)
						if err != nil {
							res = -1
						}
						slowDone <- res
					}()
				}
				// Hang guards, not measures: the pipe reads park in the
				// kernel at once, and the file read is a cached 4 KiB.
				for end := time.Now().Add(10 * time.Second); r.inKernel() < int32(slow) && time.Now().Before(end); {
					time.Sleep(time.Millisecond)
				}
				parked := r.inKernel()
				got := make([]byte, 4096)
				readDone := make(chan error, 1)
				go func() { readDone <- f.Readv(0, [][]byte{got}) }()
				var behind bool
				select {
				case err := <-readDone:
					if err != nil {
						t.Error(err)
					}
				case <-time.After(10 * time.Second):
					behind = true
				}
				for i := range pipes {
					if _, err := unix.Write(pipes[i][1], []byte{1}); err != nil {
						t.Fatal(err)
					}
				}
				for range pipes {
					if res := <-slowDone; res != 1 {
						t.Errorf("pipe read = %d, want 1", res)
					}
				}
				if parked < int32(slow) {
					t.Fatalf("only %d of %d pipe reads reached the kernel: each waited for the one before", parked, slow)
				}
				if behind {
					if err := <-readDone; err != nil {
						t.Error(err)
					}
					t.Fatalf("the file read completed only after the %d pipe reads in the kernel", slow)
				}
				testkit.MustEqual(t, got, want, "read")
			})
		}
	}
}
