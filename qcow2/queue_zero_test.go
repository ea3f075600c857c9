package qcow2_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/internal/testkit"
)

// TestQueue_ZeroDiscardInFlight: zeroings and discards go into a queue
// beside writes in flight (block A2). A discard, or a zeroing that
// unmaps, frees clusters only after every writer in the write gate has
// left it (qcow2 Q12), and the queue's fast writes leave it only when
// the owner reaps them: called synchronously by the owner with those
// writes in flight, it would wait for itself (A3). Queued, it runs on
// the slow path while the owner goes on reaping. qemu-img check passes,
// qemu-io reads every byte back, and qemu-img map shows the discarded
// and unmapped clusters deallocated.
func TestQueue_ZeroDiscardInFlight(t *testing.T) {
	testkit.NeedQemu(t)
	const cs = 64 << 10
	path := filepath.Join(t.TempDir(), "z.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", path, "16M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 2M", path)
	im, q := openXL2Queue(t, path)
	w := func(c int64, pat byte) *block.Req {
		b := block.AlignedBuf(4096, block.DefaultMemAlign)
		for i := range b {
			b[i] = pat
		}
		return &block.Req{Op: block.OpWrite, Off: c * cs, Buf: b}
	}
	var reqs []*block.Req
	for c := range int64(8) {
		reqs = append(reqs, w(c, 0x11)) // overwrites: the fast path, holding the gate
	}
	reqs = append(reqs,
		&block.Req{Op: block.OpDiscard, Off: 8 * cs, Len: 8 * cs},
		&block.Req{Op: block.OpWriteZeroes, Off: 16 * cs, Len: 4 * cs, Flags: block.MayUnmap},
		&block.Req{Op: block.OpWriteZeroes, Off: 20*cs + 4096, Len: 8192}, // inside a cluster: zeros written
		&block.Req{Op: block.OpWriteZeroes, Off: 21 * cs, Len: 2 * cs, Flags: block.Allocate},
		w(40, 0x22), w(41, 0x22)) // new clusters: the allocator
	m0 := im.Metrics()
	ok := testkit.Within(time.Minute, func() { blocktest.MustComplete(t, q, reqs...) })
	if !ok {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		fmt.Fprintf(os.Stderr, "queued zeroings and discards beside writes in flight: hung for a minute (deadlock)\n%s", buf[:n])
		panic("deadlock")
	}
	m := im.Metrics().Sub(m0)
	if m.QueueFast < 8 || m.QueueAlloc != 2 || m.QueueSlow < 4 {
		t.Fatalf("paths: %+v, want the 8 overwrites fast, 2 writes through the allocator and the 4 zeroings and discards slow", m)
	}
	closeCheckRead(t, q, im, path,
		"read -P 0x11 0 4k", "read -P 0xaa 4k 60k", "read -P 0x11 448k 4k", "read -P 0xaa 452k 60k",
		"read -P 0 512k 768k", // discarded (8-15), unmapped (16-19)
		"read -P 0xaa 1280k 4k", "read -P 0 1284k 8k", "read -P 0xaa 1292k 52k",
		"read -P 0 1344k 128k", // zeroed with Allocate (21-22)
		"read -P 0xaa 1472k 576k",
		"read -P 0x22 2560k 4k", "read -P 0 2564k 60k", "read -P 0x22 2624k 4k")
	// The discarded and unmapped clusters hold no data any more.
	var ext []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "map", "--output=json", path)), &ext); err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.Data && e.Start < 20*cs && e.Start+e.Length > 8*cs {
			t.Fatalf("qemu-img map: [%#x,+%#x) still holds data, want clusters 8-19 deallocated: %+v", e.Start, e.Length, ext)
		}
	}
}
