package qcow2_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// TestQueue_RegisterBuffers (Q17): buffers registered on an image's queue
// carry the fast path's writes and reads and the allocator's plain
// fills as READ_FIXED/WRITE_FIXED; registering with requests in flight
// is refused; what was written reads back through qemu-io.
func TestQueue_RegisterBuffers(t *testing.T) {
	t.Parallel()
	const cs, depth = 64 << 10, 8
	path := filepath.Join(t.TempDir(), "img.qcow2")
	var file *uring.File
	open := uring.Opener(uring.Options{Direct: true})
	opener := qcow2.Opener(func(p string, ro bool) (block.Device, error) {
		d, err := open(p, ro)
		if f, ok := d.(*uring.File); ok && !ro {
			file = f
		}
		return d, err
	})
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 16 << 20, ClusterSize: cs, Opener: opener}); err != nil {
		t.Fatal(err)
	}
	// No zero fill: its writes from the shared zero buffer are fixed too.
	im, err := qcow2.Open(path, qcow2.Options{Opener: opener, PreallocFill: "unwritten"})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if file == nil || file.Backend() != uring.Ring {
		t.Skip("no io_uring here")
	}
	q, err := im.NewQueue(depth)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	arena := block.AlignedBuf(depth*4096, block.DefaultMemAlign)
	var arena2 []byte // the replacement, registered later
	if err := q.(block.BufRegisterer).RegisterBuffers(arena); err != nil {
		t.Skipf("buffers not registered here: %v", err)
	}
	reqs := make([]*block.Req, depth)
	out := make([]*block.Req, depth)
	run := func(op block.Op, busy bool) {
		t.Helper()
		for i := range reqs {
			// One request per cluster: the first round allocates each.
			reqs[i] = &block.Req{Op: op, Off: int64(i) * cs, Buf: arena[i*4096 : (i+1)*4096]}
		}
		if op == block.OpWrite && arena2 != nil {
			// The second arena, into clusters of their own.
			for i := range reqs {
				reqs[i] = &block.Req{Op: op, Off: int64(depth+i) * cs, Buf: arena2[i*4096 : (i+1)*4096]}
			}
		}
		if err := q.Submit(reqs...); err != nil {
			t.Fatal(err)
		}
		if busy {
			if err := q.(block.BufRegisterer).RegisterBuffers(arena); !errors.Is(err, block.ErrBusy) {
				t.Fatalf("RegisterBuffers with requests in flight: %v", err)
			}
		}
		for n := 0; n < depth; {
			k, err := q.Wait(out[n:], depth-n)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range out[n : n+k] {
				if r.Err != nil {
					t.Fatalf("%v at %d: %v", r.Op, r.Off, r.Err)
				}
			}
			n += k
		}
	}
	fixed := func() uint64 { return file.Metrics().Fixed }
	for i := range arena {
		arena[i] = byte(i/4096) + 1
	}
	// allocRound checks that the allocator's plain fills of fresh
	// clusters (one request each, no padding) went as fixed SQEs.
	allocRound := func(busy bool) {
		t.Helper()
		m0, f0 := im.Metrics(), fixed()
		run(block.OpWrite, busy)
		m := im.Metrics()
		a := m.QueueAlloc - m0.QueueAlloc
		if a == 0 {
			t.Fatal("no write went to the allocator")
		}
		if m.FreshSkips-m0.FreshSkips != a {
			// Padded or zeroed first: the pieces go as one vector.
			t.Skipf("the reserve is not fresh here: %+v", m)
		}
		if f := fixed() - f0; f < uint64(a) {
			t.Errorf("%d allocating writes, %d fixed SQEs", a, f)
		}
	}
	allocRound(true)
	for i := range arena {
		arena[i] = byte(i/4096) + 0x41
	}
	want := bytes.Clone(arena)
	m1, f1 := im.Metrics(), fixed()
	run(block.OpWrite, false)
	if n := im.Metrics().QueueFast - m1.QueueFast; n != depth {
		t.Fatalf("%d of %d overwrites took the fast path", n, depth)
	}
	if f := fixed() - f1; f < depth {
		t.Errorf("%d overwrites, %d fixed SQEs", depth, f)
	}
	clear(arena)
	f2 := fixed()
	run(block.OpRead, false)
	if f := fixed() - f2; f < depth {
		t.Errorf("%d reads, %d fixed SQEs", depth, f)
	}
	if !bytes.Equal(arena, want) {
		t.Fatal("fixed reads do not give back the fixed writes")
	}
	// A replacement reaches the allocator too (its next batch).
	arena2 = block.AlignedBuf(depth*4096, block.DefaultMemAlign)
	for i := range arena2 {
		arena2[i] = byte(i/4096) + 0x61
	}
	if err := q.(block.BufRegisterer).RegisterBuffers(arena2); err != nil {
		t.Fatal(err)
	}
	allocRound(false)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	imgcheck.File(t, path, qcow2.Options{})
	for i := range 2 * depth {
		p := 0x41 + i
		if i >= depth {
			p = 0x61 + i - depth
		}
		testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("read -P 0x%x %d 4k", p, i*cs), "-c", fmt.Sprintf("read -P 0 %d %d", i*cs+4096, cs-4096), path)
	}
}
