//go:build linux

package uring

import (
	"fmt"
	"testing"
	"time"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// TestFile_NotBehindSlowRequest (R2): a read that arrives while the
// leader sleeps in the kernel on requests that do not complete is
// submitted at once, and completes while they are still there. The
// slow requests are reads of empty pipes (data requests as slow as the
// test likes) or polls of them (non-data, standing in for an fdatasync
// of much dirty data or a fallocate in io-wq); the test writes the
// pipes only once the file read is done (or a hang guard gave up).
//
// A waiter that was not the leader submitted its own SQE only while no
// data SQE was in the kernel and otherwise left it for the leader's next
// enter, which only a completion brings: behind one slow data request
// every request waited for it (serialised, at low depth), and behind a
// flush a cached 4 KiB read took 85 ms (256 MiB on ext4 over zram).
// Non-data requests are never counted (ring.slow), so reads pass any
// number of them; slow data requests are passed at depths up to shallow.
func TestFile_NotBehindSlowRequest(t *testing.T) {
	for _, c := range configs()[:2] { // ring, ring-direct
		for _, k := range []struct {
			kind string
			n    int
		}{{"read", 1}, {"read", shallow - 1}, {"poll", 1}, {"poll", shallow + 1}} {
			t.Run(fmt.Sprintf("%s/%s%d", c.name, k.kind, k.n), func(t *testing.T) {
				f := openTemp(t, c.opt)
				want := pattern(9, 4096)
				if err := f.Writev(0, [][]byte{want}); err != nil {
					t.Fatal(err)
				}
				r := f.io.(*ringIO).r
				pipes := make([][2]int, k.n)
				slowDone := make(chan int32, k.n)
				for i := range pipes {
					if err := unix.Pipe2(pipes[i][:], unix.O_CLOEXEC); err != nil {
						t.Fatal(err)
					}
					defer unix.Close(pipes[i][0])
					defer unix.Close(pipes[i][1])
					go func() {
						var res int32
						var err error
						if k.kind == "read" {
							res, err = r.rw(false, pipes[i][0], 0, [][]byte{make([]byte, 1)}, nil)
						} else {
							poll := sqe{op: iosys.IORING_OP_POLL_ADD, fd: int32(pipes[i][0]), opFlag: unix.POLLIN}
							res, err = r.simple(poll, nil)
						}
						if err != nil {
							res = -1
						}
						slowDone <- res
					}()
				}
				// Hang guards, not measures: the slow requests park in
				// the kernel at once, and the file read is a cached 4 KiB.
				for end := time.Now().Add(10 * time.Second); r.inKernel() < int32(k.n) && time.Now().Before(end); {
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
					if res := <-slowDone; res < 1 {
						t.Errorf("slow %s = %d, want > 0", k.kind, res)
					}
				}
				if parked < int32(k.n) {
					t.Fatalf("only %d of %d slow requests reached the kernel: each waited for the one before", parked, k.n)
				}
				if behind {
					if err := <-readDone; err != nil {
						t.Error(err)
					}
					t.Fatalf("the file read completed only after the %d slow requests in the kernel", k.n)
				}
				testkit.MustEqual(t, got, want, "read")
			})
		}
	}
}
