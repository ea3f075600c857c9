package nbd

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2"
)

func revImage(t *testing.T) (*memdev.Dev, *qcow2.Image) {
	d := memdev.New(memdev.Options{})
	img := createImage(t, d, qcow2.CreateOptions{Size: revSize, ClusterSize: 65536})
	return d, img
}

// TestQueuedDiscWithInFlight: 96 READ/WRITE requests then DISC in one
// burst: every request gets exactly one reply, then the server closes.
// Afterwards the per-connection budget was fully returned (checked
// while the connection is idle, before DISC, in a second round).
func TestQueuedDiscWithInFlight(t *testing.T) {
	for _, structured := range []bool{false, true} {
		_, img := revImage(t)
		srv := &Server{Exports: []*Export{{Dev: img}}, Logf: t.Logf, MaxInFlight: 8}
		s := serveTest(t, srv)
		c := dial(t, s)
		c.connect("", structured)
		rng := rand.New(rand.NewPCG(1, 1))
		pc := newPipeClient(c)
		lens := map[uint64]int{}
		var burst []byte
		for i := range uint64(96) {
			n := uint32(rng.IntN(200000) + 1)
			off := uint64(rng.IntN(revSize - int(n)))
			typ := uint16(cmdRead)
			var p []byte
			if i%2 == 0 {
				typ = cmdWrite
				p = pattern(int(n), byte(i))
			} else {
				lens[i] = int(n)
			}
			pc.lens.Store(i, lens[i])
			c.request(typ, 0, i, off, n, p)
		}
		_ = burst
		// budget check while idle: read all replies first
		got := map[uint64]int{}
		for range 96 {
			ch, ok := <-pc.replies
			if !ok {
				t.Fatal("closed")
			}
			if ch.err != 0 || ch.flags&replyFlagDone == 0 {
				t.Fatalf("cookie %d: err %d flags %x", ch.cookie, ch.err, ch.flags)
			}
			got[ch.cookie]++
		}
		for i := range uint64(96) {
			if got[i] != 1 {
				t.Errorf("cookie %d: %d replies", i, got[i])
			}
		}
		deadline := time.Now().Add(20 * time.Second) // a hang guard
		for {
			srv.mu.Lock()
			ok := true
			for cn := range srv.conns {
				cn.budget.mu.Lock()
				if cn.budget.slots != 8 || cn.budget.bytes != srv.maxInFlightBytes() {
					ok = false
					if time.Now().After(deadline) {
						t.Errorf("idle connection's budget: %d slots, %d bytes; want 8, %d", cn.budget.slots, cn.budget.bytes, srv.maxInFlightBytes())
					}
				}
				cn.budget.mu.Unlock()
			}
			srv.mu.Unlock()
			if ok || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		// second round: requests then DISC in the same burst
		clear(got)
		for i := range uint64(64) {
			n := uint32(rng.IntN(100000) + 1)
			off := uint64(rng.IntN(revSize - int(n)))
			if i%2 == 0 {
				pc.lens.Store(1000+i, 0)
				c.request(cmdWrite, 0, 1000+i, off, n, pattern(int(n), byte(i)))
			} else {
				pc.lens.Store(1000+i, int(n))
				c.request(cmdRead, 0, 1000+i, off, n, nil)
			}
		}
		c.request(cmdDisc, 0, 5000, 0, 0, nil)
		count := 0
		for {
			ch, ok := <-pc.replies
			if !ok {
				break
			}
			got[ch.cookie]++
			count++
		}
		if count != 64 {
			t.Errorf("structured %v: %d replies after DISC, want 64", structured, count)
		}
		mustReturn(t, "shutdown", func() error { return srv.Shutdown(t.Context()) })
		mustReturn(t, "close", img.Close)
	}
}

// TestQueuedMultiConnFlush: writes queued and replied on connection A,
// then a FLUSH on connection B; the crash clone taken at B's FLUSH reply
// has A's writes (NBD_FLAG_CAN_MULTI_CONN).
func TestQueuedMultiConnFlush(t *testing.T) {
	d, img := revImage(t)
	srv := &Server{Exports: []*Export{{Dev: img, MultiConn: true}}, Logf: t.Logf}
	s := serveTest(t, srv)
	a, b := dial(t, s), dial(t, s)
	a.connect("", true)
	b.connect("", false)
	ref := map[uint64][]byte{}
	for i := range uint64(40) {
		off := i*300000 + uint64(i%7)*512
		p := pattern(4096+int(i)*100, byte(i+1))
		ref[off] = p
		a.request(cmdWrite, 0, i, off, uint32(len(p)), p)
	}
	for range 40 {
		if ch := a.readReply(0); ch.err != 0 {
			t.Fatal(ch.err)
		}
	}
	b.request(cmdFlush, 0, 1, 0, 0, nil)
	if ch := b.readReply(0); ch.err != 0 {
		t.Fatal(ch.err)
	}
	clone := d.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
	im2, err := qcow2.OpenDevice(clone, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for off, p := range ref {
		got := make([]byte, len(p))
		if err := block.ReadAt(im2, got, int64(off)); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(p) {
			t.Errorf("write at %d not covered by the other connection's FLUSH", off)
		}
	}
}
