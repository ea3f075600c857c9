package nbd

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2"
)

type rwr struct {
	off uint64
	n   uint32
	d   []byte
}

// TestQueuedFlushCoversWrites: writes pipelined on the queued path
// (allocating and overwriting, inside and across clusters), their
// replies all received, then a FLUSH sent together with more writes to
// other ranges; as soon as the FLUSH reply arrives the device is
// crash-cloned keeping nothing unflushed. The clone, opened as a qcow2
// image, must hold every write of the first phase.
func TestQueuedFlushCoversWrites(t *testing.T) {
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 7))
		d := memdev.New(memdev.Options{})
		im := createImage(t, d, qcow2.CreateOptions{Size: revSize, ClusterSize: 65536})
		srv := &Server{Exports: []*Export{{Dev: im}}, Logf: t.Logf}
		s := serveTest(t, srv)
		c := dial(t, s)
		c.connect("", seed%2 == 0, "base:allocation")
		ref := make([]byte, revSize)
		half := uint64(revSize / 2)
		mk := func(lo, hi uint64, k int) []rwr {
			var ws []rwr
			used := map[uint64]bool{}
			for len(ws) < k {
				n := uint32(rng.IntN(3*4096) + 1)
				if rng.IntN(3) == 0 {
					n = 4096
				}
				off := lo + uint64(rng.IntN(int(hi-lo)-int(n)))
				if rng.IntN(2) == 0 {
					off &^= 4095
				}
				blk := off / 16384
				if used[blk] || used[(off+uint64(n)-1)/16384] {
					continue
				}
				used[blk], used[(off+uint64(n)-1)/16384] = true, true
				ws = append(ws, rwr{off, n, pattern(int(n), byte(rng.IntN(250)+1))})
			}
			return ws
		}
		w1 := mk(0, half, 48)
		for i, w := range w1 {
			c.request(cmdWrite, 0, uint64(i), w.off, w.n, w.d)
		}
		for range w1 {
			if ch := c.readReply(0); ch.err != 0 {
				t.Fatalf("write %d: %d", ch.cookie, ch.err)
			}
		}
		for _, w := range w1 {
			copy(ref[w.off:], w.d)
		}
		w2 := mk(half, revSize, 48)
		c.request(cmdFlush, 0, 1000, 0, 0, nil)
		for i, w := range w2 {
			c.request(cmdWrite, 0, uint64(2000+i), w.off, w.n, w.d)
		}
		var clone *memdev.Dev
		for range len(w2) + 1 {
			ch := c.readReply(0)
			if ch.err != 0 {
				t.Fatalf("%d: %d", ch.cookie, ch.err)
			}
			if ch.cookie == 1000 {
				clone = d.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
			}
		}
		im2, err := qcow2.OpenDevice(clone, qcow2.Options{})
		if err != nil {
			t.Fatalf("seed %d: open the crash clone: %v", seed, err)
		}
		got := make([]byte, half)
		if err := block.ReadAt(im2, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ref[:half]) {
			for _, w := range w1 {
				if !bytes.Equal(got[w.off:w.off+uint64(w.n)], w.d) {
					t.Errorf("seed %d: write [%d,+%d) replied before the FLUSH is not in the flushed image", seed, w.off, w.n)
				}
			}
		}
		im2.Close()
	}
}

// TestQueuedPipelinedReadAfterWrite: a connection pipelines writes and
// reads; every read is issued only after the replies of the writes it
// overlaps, while other writes are in flight. Each read must see them.
func TestQueuedPipelinedReadAfterWrite(t *testing.T) {
	for _, structured := range []bool{false, true} {
		d := memdev.New(memdev.Options{})
		im := createImage(t, d, qcow2.CreateOptions{Size: revSize, ClusterSize: 65536, ExtendedL2: structured})
		srv := &Server{Exports: []*Export{{Dev: im}}, Logf: t.Logf, MaxInFlight: 32}
		s := serveTest(t, srv)
		c := dial(t, s)
		if structured {
			c.connect("", true, "base:allocation")
		} else {
			c.connect("", false)
		}
		rng := rand.New(rand.NewPCG(3, 4))
		ref := make([]byte, revSize)
		type out struct {
			write bool
			off   uint64
			n     uint32
			d     []byte
		}
		inflight := map[uint64]out{}
		busy := func(off uint64, n uint32, writesOnly bool) bool {
			for _, o := range inflight {
				if (o.write || !writesOnly) && off < o.off+uint64(o.n) && o.off < off+uint64(n) {
					return true
				}
			}
			return false
		}
		var lens sync.Map
		replies := make(chan chunk, 1<<16)
		go func() {
			defer close(replies)
			for {
				ch, err := c.tryReply(func(ck uint64) int {
					v, _ := lens.Load(ck)
					return v.(int)
				})
				if err != nil {
					return
				}
				replies <- ch
			}
		}()
		next := uint64(1)
		data := map[uint64][]byte{}
		reads, bad := 0, 0
		rounds := 400
		if raceEnabled {
			rounds = 100
		}
		for round := 0; round < rounds; round++ {
			for k := rng.IntN(24); k > 0; k-- {
				n := uint32(rng.IntN(70000) + 1)
				off := uint64(rng.IntN(revSize/8 - int(n)))
				if rng.IntN(2) == 0 {
					off &^= 511
				}
				if rng.IntN(2) == 0 {
					if busy(off, n, false) {
						continue
					}
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.IntN(255) + 1)
					}
					inflight[next] = out{true, off, n, p}
					lens.Store(next, 0)
					c.request(cmdWrite, 0, next, off, n, p)
				} else {
					if busy(off, n, true) {
						continue
					}
					inflight[next] = out{false, off, n, nil}
					data[next] = make([]byte, n)
					lens.Store(next, int(n))
					c.request(cmdRead, 0, next, off, n, nil)
				}
				next++
			}
			target := rng.IntN(len(inflight) + 1)
			for len(inflight) > target {
				ch, ok := <-replies
				if !ok {
					t.Fatal("connection closed")
				}
				o, ok := inflight[ch.cookie]
				if !ok {
					t.Fatalf("reply for unknown cookie %d", ch.cookie)
				}
				if ch.err != 0 {
					t.Fatalf("cookie %d: error %d", ch.cookie, ch.err)
				}
				if o.write {
					copy(ref[o.off:], o.d)
					delete(inflight, ch.cookie)
					continue
				}
				buf := data[ch.cookie]
				if ch.simple {
					copy(buf, ch.data)
				} else {
					switch ch.typ {
					case replyOffsetData:
						x := binary.BigEndian.Uint64(ch.data)
						copy(buf[x-o.off:], ch.data[8:])
					case replyOffsetHole:
						x := binary.BigEndian.Uint64(ch.data)
						clear(buf[x-o.off : x-o.off+uint64(binary.BigEndian.Uint32(ch.data[8:]))])
					default:
						t.Fatalf("chunk type %d", ch.typ)
					}
					if ch.flags&replyFlagDone == 0 {
						continue
					}
				}
				reads++
				if !bytes.Equal(buf, ref[o.off:o.off+uint64(o.n)]) {
					bad++
					if bad < 4 {
						t.Errorf("read [%d,+%d) does not see the writes replied before it", o.off, o.n)
					}
				}
				delete(inflight, ch.cookie)
				delete(data, ch.cookie)
			}
		}
		t.Logf("structured %v: %d reads checked, %d bad", structured, reads, bad)
	}
}

const revSize = 64 << 20
