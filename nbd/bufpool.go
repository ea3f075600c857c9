package nbd

import (
	"math/bits"
	"sync"

	"github.com/qring/qring/block"
)

// Payload buffers come from pools by power-of-two size class, 4 KiB to
// MaxPayload, aligned for O_DIRECT (block.DefaultMemAlign) so a device
// on the fast path can take them as they are.
const minClassShift = 12

var pools [26 - minClassShift]sync.Pool // 1<<25 = MaxPayload: classes 4 KiB .. 32 MiB

type pooled struct{ b []byte }

func class(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of n bytes (n <= MaxPayload), not zeroed.
func getBuf(n int) []byte {
	k := class(n)
	if p, _ := pools[k].Get().(*pooled); p != nil {
		return p.b[:n]
	}
	return block.AlignedBuf(1<<(k+minClassShift), block.DefaultMemAlign)[:n]
}

// putBuf returns a buffer from getBuf.
func putBuf(b []byte) {
	if cap(b) < 1<<minClassShift {
		return
	}
	k := class(cap(b))
	if 1<<(k+minClassShift) != cap(b) {
		return
	}
	pools[k].Put(&pooled{b[:cap(b)]})
}

// budget bounds the requests of one connection in flight: a number of
// slots and a number of payload bytes. Acquire waits; the reader is the
// only one that waits, so a client that floods a connection is slowed
// down to the device's pace instead of growing the server's memory.
type budget struct {
	mu    sync.Mutex
	cond  sync.Cond
	slots int
	bytes int64
}

func newBudget(slots int, bytes int64) *budget {
	b := &budget{slots: slots, bytes: bytes}
	b.cond.L = &b.mu
	return b
}

// acquire takes a slot and n bytes (n is at most the whole budget: the
// caller bounds it by MaxPayload, and the budget is at least that).
func (b *budget) acquire(n int64) {
	b.mu.Lock()
	for b.slots == 0 || b.bytes < n {
		b.cond.Wait()
	}
	b.slots--
	b.bytes -= n
	b.mu.Unlock()
}

func (b *budget) release(n int64) { b.releaseN(1, n) }

// releaseN gives back k slots and n bytes at once.
func (b *budget) releaseN(k int, n int64) {
	b.mu.Lock()
	b.slots += k
	b.bytes += n
	b.mu.Unlock()
	b.cond.Broadcast()
}
