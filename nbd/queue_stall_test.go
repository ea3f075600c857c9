package nbd

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2"
)

// workersOnly hides the image's queue (block.Queuer): every request runs
// on the workers.
type workersOnly struct{ block.Device }

func (w workersOnly) Discard(off, n int64) error { return w.Device.(Discarder).Discard(off, n) }

// TestQueuedSlowClientBlocksNoOtherConnection: client B pipelines
// large READs and stops reading its replies (a slow client, a full TCP
// window). A TRIM from client A on another connection of the same export
// is still answered: B's replier blocks writing, but B's owner goes on
// reaping B's reads, which would otherwise keep the image's data gate
// (qcow2 Q12) that Image.Discard waits for. The worker path, where each
// request leaves the gate before its reply is written, runs alongside.
func TestQueuedSlowClientBlocksNoOtherConnection(t *testing.T) {
	for _, queued := range []bool{false, true} {
		d := &slowReadDev{Dev: memdev.New(memdev.Options{})}
		img := createImage(t, d, qcow2.CreateOptions{Size: revSize, ClusterSize: 65536})
		if err := block.WriteAt(img, pattern(32<<20, 5), 0); err != nil {
			t.Fatal(err)
		}
		d.slow.Store(true)
		var dev block.Device = img
		if !queued {
			dev = workersOnly{img}
		}
		srv := &Server{Exports: []*Export{{Dev: dev, Unmap: true, MultiConn: true}}, Logf: t.Logf}
		s := serveNoCleanup(t, srv)
		b := dial(t, s)
		b.connect("", false)
		for i := range 64 {
			b.request(cmdRead, 0, uint64(i), uint64(i)<<20, 1<<20, nil)
		}
		time.Sleep(500 * time.Millisecond) // B's replies fill the socket
		a := dial(t, s)
		a.connect("", false)
		done := make(chan uint32, 1)
		go func() {
			a.request(cmdTrim, 0, 1, 31<<20, 65536, nil)
			ch, err := a.tryReply(func(uint64) int { return 0 })
			if err != nil {
				done <- 999
				return
			}
			done <- ch.err
		}()
		answered := false
		select {
		case code := <-done:
			answered = true
			t.Logf("queued path %v: A's TRIM answered (%d) while B is not reading", queued, code)
		case <-time.After(30 * time.Second): // stuck, the bug, is for as long as B stays
			t.Errorf("queued path %v: A's TRIM has no reply after 30 s while B is not reading", queued)
		}
		b.nc.Close() // B goes away: everything unwinds
		if !answered {
			select {
			case code := <-done:
				t.Logf("queued path %v: A's TRIM answered (%d) once B left", queued, code)
			case <-time.After(30 * time.Second):
				t.Errorf("queued path %v: A's TRIM still stuck after B left", queued)
			}
		}
		mustReturn(t, "shutdown", func() error { return srv.Shutdown(t.Context()) })
		mustReturn(t, "close", img.Close)
	}
}

// slowReadDev is a memdev whose reads take 200 µs while slow is set.
type slowReadDev struct {
	*memdev.Dev
	slow atomic.Bool
}

func (d *slowReadDev) Readv(off int64, bufs [][]byte) error {
	if d.slow.Load() {
		time.Sleep(200 * time.Microsecond)
	}
	return d.Dev.Readv(off, bufs)
}
