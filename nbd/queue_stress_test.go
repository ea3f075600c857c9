package nbd

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

// pipeClient runs a receiver goroutine so that the test can pipeline
// without deadlocking on socket buffers.
type pipeClient struct {
	c       *client
	lens    sync.Map
	replies chan chunk
}

func newPipeClient(c *client) *pipeClient {
	p := &pipeClient{c: c, replies: make(chan chunk, 1<<16)}
	go func() {
		defer close(p.replies)
		for {
			ch, err := c.tryReply(func(ck uint64) int {
				v, _ := p.lens.Load(ck)
				n, _ := v.(int)
				return n
			})
			if err != nil {
				return
			}
			p.replies <- ch
		}
	}()
	return p
}

type op struct {
	typ    uint16
	off    uint64
	n      uint32
	d      []byte
	buf    []byte
	chunks int
}

// runMixed pipelines a random mix on [base, base+size) and checks every
// read against a reference; stopAfter rounds (or abort: close the socket
// with requests in flight).
func runMixed(t *testing.T, c *client, seed uint64, base, size uint64, rounds int, structured, abort bool) (reads, bad int) {
	p := newPipeClient(c)
	rng := rand.New(rand.NewPCG(seed, 99))
	ref := make([]byte, size)
	inflight := map[uint64]*op{}
	busy := func(off uint64, n uint32, writesOnly bool) bool {
		for _, o := range inflight {
			w := o.typ != cmdRead && o.typ != cmdFlush
			if (w || !writesOnly) && o.typ != cmdFlush && off < o.off+uint64(o.n) && o.off < off+uint64(n) {
				return true
			}
		}
		return false
	}
	next := uint64(1)
	for round := 0; round < rounds; round++ {
		for k := rng.IntN(32); k > 0; k-- {
			n := uint32(rng.IntN(140000) + 1)
			if rng.IntN(3) == 0 {
				n = 4096 << rng.IntN(5)
			}
			off := base + uint64(rng.IntN(int(size)-int(n)))
			if rng.IntN(2) == 0 {
				off &^= 4095
			}
			o := &op{off: off, n: n}
			switch x := rng.IntN(100); {
			case x < 45:
				o.typ = cmdWrite
			case x < 85:
				o.typ = cmdRead
			case x < 90:
				o.typ = cmdWriteZeroes
			case x < 95:
				o.typ = cmdTrim
				o.off &^= 65535
				o.n = uint32(65536 * (1 + rng.IntN(3)))
				if o.off+uint64(o.n) > base+size {
					continue
				}
			default:
				o.typ = cmdFlush
				o.off, o.n = 0, 0
			}
			if o.typ != cmdFlush && busy(o.off, o.n, o.typ == cmdRead) {
				continue
			}
			var payload []byte
			switch o.typ {
			case cmdWrite:
				o.d = make([]byte, o.n)
				seedb := rng.Uint64() | 0x0101010101010101
				for i := range o.d {
					o.d[i] = byte(seedb>>(8*(i%8))) + byte(i/8)
				}
				if rng.IntN(10) == 0 {
					clear(o.d)
				}
				payload = o.d
				p.lens.Store(next, 0)
			case cmdRead:
				o.buf = make([]byte, o.n)
				p.lens.Store(next, int(o.n))
			default:
				p.lens.Store(next, 0)
			}
			inflight[next] = o
			var flags uint16
			if o.typ == cmdWrite && rng.IntN(20) == 0 {
				flags = cmdFlagFUA
			}
			if o.typ == cmdRead && structured && rng.IntN(5) == 0 {
				flags = cmdFlagDF
			}
			c.request(o.typ, flags, next, o.off, o.n, payload)
			next++
		}
		if abort && round == rounds-1 {
			// half a request, then gone
			b := binary.BigEndian.AppendUint32(nil, magicRequest)
			b = binary.BigEndian.AppendUint16(b, 0)
			b = binary.BigEndian.AppendUint16(b, cmdWrite)
			b = binary.BigEndian.AppendUint64(b, next)
			b = binary.BigEndian.AppendUint64(b, base)
			b = binary.BigEndian.AppendUint32(b, 65536)
			c.write(append(b, make([]byte, 1000)...))
			c.nc.Close()
			return
		}
		target := rng.IntN(len(inflight) + 1)
		if round == rounds-1 {
			target = 0
		}
		for len(inflight) > target {
			ch, ok := <-p.replies
			if !ok {
				t.Fatal("connection closed")
			}
			o, ok := inflight[ch.cookie]
			if !ok {
				t.Fatalf("reply for unknown cookie %d", ch.cookie)
			}
			if ch.err != 0 {
				t.Fatalf("cookie %d (%s [%d,+%d)): error %d", ch.cookie, cmdName(o.typ), o.off, o.n, ch.err)
			}
			switch o.typ {
			case cmdWrite:
				copy(ref[o.off-base:], o.d)
			case cmdWriteZeroes, cmdTrim:
				clear(ref[o.off-base : o.off-base+uint64(o.n)])
			case cmdRead:
				if ch.simple {
					if !bytes.Equal(ch.data, ref[o.off-base:o.off-base+uint64(o.n)]) {
						bad++
					}
					reads++
					break
				}
				switch ch.typ {
				case replyOffsetData:
					x := binary.BigEndian.Uint64(ch.data)
					copy(o.buf[x-o.off:], ch.data[8:])
				case replyOffsetHole:
					x := binary.BigEndian.Uint64(ch.data)
					clear(o.buf[x-o.off : x-o.off+uint64(binary.BigEndian.Uint32(ch.data[8:]))])
				default:
					t.Fatalf("chunk type %d", ch.typ)
				}
				if ch.flags&replyFlagDone == 0 {
					continue
				}
				reads++
				if !bytes.Equal(o.buf, ref[o.off-base:o.off-base+uint64(o.n)]) {
					bad++
					if bad < 4 {
						t.Errorf("read [%d,+%d) does not match", o.off, o.n)
					}
				}
			}
			delete(inflight, ch.cookie)
		}
	}
	c.request(cmdDisc, 0, 0, 0, 0, nil)
	if _, ok := <-p.replies; ok {
		t.Error("a reply after DISC with nothing in flight")
	}
	return
}

// TestQueuedMixedStress: several connections on one qcow2 image, each
// pipelining reads, writes (some FUA, some zero), WRITE_ZEROES, TRIM
// (unmapping: Discard, which syncs the data gate the queue's requests
// hold) and FLUSH on a range of its own; some connections vanish with
// requests in flight and half a request sent. Afterwards Shutdown
// returns, no goroutine is left, the image discards and closes, and
// qemu-img finds it clean.
func TestQueuedMixedStress(t *testing.T) {
	for _, structured := range []bool{false, true} {
		base := runtime.NumGoroutine()
		d := memdev.New(memdev.Options{})
		img := createImage(t, d, qcow2.CreateOptions{Size: revSize, ClusterSize: 65536})
		srv := &Server{Exports: []*Export{{Dev: img, Unmap: true, MultiConn: true, DetectZeroes: DetectUnmap}}, Logf: t.Logf, MaxInFlight: 16, MaxInFlightBytes: 40 << 20}
		s := serveNoCleanup(t, srv)
		rounds := 150
		if raceEnabled {
			rounds = 30
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		total, totalBad := 0, 0
		for k := range 6 {
			wg.Go(func() {
				c := dial(t, s)
				if structured {
					c.connect("", true, "base:allocation")
				} else {
					c.connect("", false)
				}
				r, b := runMixed(t, c, uint64(k), uint64(k)*(8<<20), 8<<20, rounds, structured, k%3 == 2)
				mu.Lock()
				total += r
				totalBad += b
				mu.Unlock()
			})
		}
		wg.Wait()
		t.Logf("structured %v: %d reads checked, %d bad", structured, total, totalBad)
		if totalBad > 0 {
			t.Errorf("%d bad reads", totalBad)
		}
		mustReturn(t, "shutdown", func() error { return srv.Shutdown(t.Context()) })
		mustReturn(t, "discard", func() error { return img.Discard(0, 65536) })
		mustReturn(t, "close", img.Close)
		imgcheck.Mem(t, d, qcow2.Options{})
		deadline := time.Now().Add(20 * time.Second) // a hang guard (it was 5 s)
		for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > base+2 {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines left (were %d):\n%s", g, base, buf[:runtime.Stack(buf, true)])
		}
	}
}
