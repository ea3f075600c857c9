package nbd

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// altDirty is a dirty bitmap whose state changes at every byte: dirty
// at even offsets.
type altDirty struct{}

func (altDirty) DirtyRun(off, n int64) (bool, int64, error) { return off%2 == 0, 1, nil }

// TestStatusManyContexts: a BLOCK_STATUS request with every context
// selected (base:allocation, qemu:allocation-depth and MaxBitmaps dirty
// bitmaps) gets its reply. Its worst case was counted at maxDescriptors
// per context, 66 MiB against the connection's 64 MiB budget: the reader
// waited for the budget for ever, so the connection hung, and so did
// Server.Shutdown (qnbd -A with 62 -B bitmaps and nbdsh asking for all
// of them; a signal then left qnbd up until a third one killed it
// without flushing the image). Each context now gets fewer descriptors,
// so that the worst case fits the smallest budget.
func TestStatusManyContexts(t *testing.T) {
	for k := 1; k <= 2+MaxBitmaps; k++ {
		c := &conn{meta: make([]uint32, k)}
		if cost := c.statusCost(&request{len: 1<<32 - 1}); cost > MaxPayload {
			t.Fatalf("%d contexts: a BLOCK_STATUS costs %d bytes, more than the smallest budget (%d): it would never start", k, cost, MaxPayload)
		}
	}
	exp := &Export{Dev: hugeDev{}, Status: fakeStatus{period: 2, data: 1}, AllocationDepth: true}
	names := []string{"base:allocation", "qemu:allocation-depth"}
	for i := range MaxBitmaps {
		exp.Bitmaps = append(exp.Bitmaps, Bitmap{Name: fmt.Sprint("b", i), Source: altDirty{}})
		names = append(names, fmt.Sprint("qemu:dirty-bitmap:b", i))
	}
	s := serveTest(t, &Server{Exports: []*Export{exp}, Logf: t.Logf})
	c := dial(t, s)
	c.connect("", true, names...)
	c.request(cmdBlockStatus, 0, 1, 0, 1<<20, nil)
	covered := -1
	for i := range names {
		ch := c.readReply(0)
		if ch.err != 0 || ch.typ != replyBlockStatus || ch.cookie != 1 {
			t.Fatalf("chunk %d: type %d, error %d, cookie %d", i, ch.typ, ch.err, ch.cookie)
		}
		if done := ch.flags&replyFlagDone != 0; done != (i == len(names)-1) {
			t.Fatalf("chunk %d of %d: done %v", i, len(names), done)
		}
		if id := binary.BigEndian.Uint32(ch.data); id != uint32(i) {
			t.Fatalf("chunk %d: context %d", i, id)
		}
		n := (len(ch.data) - 4) / 8
		if n < 1 || n > maxDescriptors {
			t.Fatalf("context %d: %d descriptors, want 1 to %d", i, n, maxDescriptors)
		}
		sum := 0
		for d := ch.data[4:]; len(d) > 0; d = d[8:] {
			sum += int(binary.BigEndian.Uint32(d))
		}
		if covered >= 0 && sum != covered {
			t.Fatalf("context %d covers %d bytes, context 0 %d", i, sum, covered)
		}
		covered = sum
	}
	// The connection goes on.
	if e, _, _ := c.do(cmdRead, 0, 0, 512, nil); e != 0 {
		t.Fatalf("READ after the status: error %d", e)
	}
}
