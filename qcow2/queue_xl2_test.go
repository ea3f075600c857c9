package qcow2_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// TestQueue_FastPathXL2 (Q14 with extended L2): on an image QEMU made and
// wrote, queued requests inside one cluster whose subclusters have one
// state take the fast path (reads of data, of zero and of unallocated
// subclusters; writes into allocated ones); a read across subcluster
// states and writes into unallocated or zero subclusters run the
// synchronous path; writes into unallocated or zero subclusters go to the
// allocator (Q16). qemu-io reads every byte back.
func TestQueue_FastPathXL2(t *testing.T) {
	t.Parallel()
	const cs, sc = 64 << 10, 2 << 10 // 32 subclusters of 2 KiB
	path := filepath.Join(t.TempDir(), "xl2.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", path, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2",
		"-c", "write -P 1 0 64k", // cluster 0: every subcluster allocated
		"-c", "write -P 2 64k 4k", // cluster 1: subclusters 0-1 allocated, the rest unallocated
		"-c", "write -P 3 192k 64k", "-c", "write -z 200k 4k", // cluster 3: subclusters 4-5 zero
		path)
	im, q := openXL2Queue(t, path)
	run := func(reqs ...*block.Req) (fast, slow, alloc int64) {
		t.Helper()
		m := queuedPaths(t, im, q, reqs...)
		return m.QueueFast, m.QueueSlow, m.QueueAlloc
	}
	rd := func(off, n int) *block.Req {
		return &block.Req{Op: block.OpRead, Off: int64(off), Buf: bytes.Repeat([]byte{0xee}, n)}
	}
	reads := []*block.Req{
		rd(4096, 4096),      // data
		rd(cs+sc, sc),       // data: subcluster 1
		rd(cs+4096, 8192),   // unallocated subclusters, no backing: zeros
		rd(2*cs, 4096),      // unallocated cluster
		rd(3*cs+8192, 4096), // zero subclusters
		rd(3*cs+4096, 8192), // data then zeros: across subcluster states
		rd(cs-2048, 4096),   // across clusters
	}
	if fast, slow, alloc := run(reads...); fast != 5 || slow != 2 || alloc != 0 {
		t.Errorf("reads: %d fast, %d slow, %d allocator (want 5, 2, 0)", fast, slow, alloc)
	}
	want := [][]byte{
		bytes.Repeat([]byte{1}, 4096),
		bytes.Repeat([]byte{2}, sc),
		make([]byte, 8192),
		make([]byte, 4096),
		make([]byte, 4096),
		append(bytes.Repeat([]byte{3}, 4096), make([]byte, 4096)...),
		append(bytes.Repeat([]byte{1}, 2048), bytes.Repeat([]byte{2}, 2048)...),
	}
	for i, r := range reads {
		testkit.MustEqual(t, r.Buf, want[i], fmt.Sprintf("queued read %d at %#x", i, r.Off))
	}
	wr := func(off, n int, p byte) *block.Req {
		return &block.Req{Op: block.OpWrite, Off: int64(off), Buf: bytes.Repeat([]byte{p}, n)}
	}
	if fast, slow, alloc := run(
		wr(8192, 4096, 0x41),      // allocated subclusters
		wr(cs+sc, sc, 0x42),       // allocated subcluster 1
		wr(cs+8192, 4096, 0x43),   // unallocated subclusters
		wr(3*cs+8192, 2048, 0x44), // a zero subcluster
	); fast != 2 || slow != 0 || alloc != 2 {
		t.Errorf("writes: %d fast, %d slow, %d allocator (want 2, 0, 2)", fast, slow, alloc)
	}
	closeCheckRead(t, q, im, path,
		"read -P 1 0 8k", "read -P 0x41 8k 4k", "read -P 1 12k 52k",
		"read -P 2 64k 2k", "read -P 0x42 66k 2k", "read -P 0 68k 4k",
		"read -P 0x43 72k 4k", "read -P 0 76k 116k",
		"read -P 3 192k 8k", "read -P 0x44 200k 2k", "read -P 0 202k 2k", "read -P 3 204k 52k")
}

// TestQueue_FastPathXL2Backing: over a backing file, zero subclusters
// still read as zeros on the fast path, and unallocated ones run the
// synchronous path, which reads the backing file.
func TestQueue_FastPathXL2Backing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", base)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "-b", base, "-F", "qcow2", top)
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4k", "-c", "write -z 8k 4k", top)
	im, q := openXL2Queue(t, top)
	reqs := []*block.Req{
		{Op: block.OpRead, Off: 0, Buf: make([]byte, 4096)},     // data
		{Op: block.OpRead, Off: 8192, Buf: make([]byte, 4096)},  // zero subclusters
		{Op: block.OpRead, Off: 16384, Buf: make([]byte, 4096)}, // unallocated: the backing file's
	}
	for _, r := range reqs {
		for i := range r.Buf {
			r.Buf[i] = 0xee
		}
	}
	if m := queuedPaths(t, im, q, reqs...); m.QueueFast != 2 || m.QueueSlow != 1 {
		t.Errorf("%d fast, %d slow (want 2, 1)", m.QueueFast, m.QueueSlow)
	}
	testkit.MustEqual(t, reqs[0].Buf, bytes.Repeat([]byte{1}, 4096), "data")
	testkit.MustEqual(t, reqs[1].Buf, make([]byte, 4096), "zero subclusters over a backing file")
	testkit.MustEqual(t, reqs[2].Buf, bytes.Repeat([]byte{7}, 4096), "unallocated subclusters over a backing file")
}

// TestQueue_AllocXL2 (Q16 with extended L2): queued writes into
// subclusters that are not allocated go to the queue's allocator, none to
// the synchronous path: a new cluster over a backing file (the other
// subclusters keep reading it), a write that is not whole subclusters
// (its subcluster's rest copied from the backing file), a write into a
// compressed cluster (the whole cluster copied), a group of two writes,
// and a second write into a cluster the same Submit allocates (parked,
// then an allocation of more subclusters in the same host cluster).
// qemu-img check passes and qemu-io reads every byte back.
func TestQueue_AllocXL2(t *testing.T) {
	t.Parallel()
	const cs = 64 << 10
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", base)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "-b", base, "-F", "qcow2", top)
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -c -P 5 256k 64k", top)
	im, q := openXL2Queue(t, top)
	// The L2 slice of every cluster written is cached (openXL2Queue read
	// cluster 0; one slice covers them all), so the owner can route.
	wr := func(off, n int, p byte) *block.Req {
		return &block.Req{Op: block.OpWrite, Off: int64(off), Buf: bytes.Repeat([]byte{p}, n)}
	}
	reqs := []*block.Req{
		wr(0, 4096, 0x11),         // new cluster, whole subclusters
		wr(cs+100, 1000, 0x12),    // new cluster, part of a subcluster
		wr(4*cs+4096, 4096, 0x13), // compressed cluster
		wr(2*cs, 4096, 0x14),      // a group of two
		wr(2*cs+4096, 4096, 0x15), //
		wr(8192, 4096, 0x16),      // cluster 0 again: parked, then its own allocation
	}
	m := queuedPaths(t, im, q, reqs...)
	if m.QueueAlloc != int64(len(reqs)) || m.QueueAllocSync != 0 || m.QueueSlow != 0 || m.QueueFast != 0 {
		t.Errorf("%d allocator (%d of them handed back), %d slow, %d fast (want %d, 0, 0, 0)", m.QueueAlloc, m.QueueAllocSync, m.QueueSlow, m.QueueFast, len(reqs))
	}
	if m.ClustersAllocated != 4 {
		t.Errorf("%d clusters allocated, want 4 (cluster 0's second write reuses its host cluster)", m.ClustersAllocated)
	}
	closeCheckRead(t, q, im, top,
		"read -P 0x11 0 4k", "read -P 7 4k 4k", "read -P 0x16 8k 4k", "read -P 7 12k 52k",
		"read -P 7 64k 100", "read -P 0x12 65636 1000", "read -P 7 66636 64436",
		"read -P 0x14 128k 4k", "read -P 0x15 132k 4k", "read -P 7 136k 56k",
		"read -P 7 192k 64k",
		"read -P 5 256k 4k", "read -P 0x13 260k 4k", "read -P 5 264k 56k",
		"read -P 7 320k 704k")
}

// TestQueue_AllocXL2Reused: on an extended-L2 image whose freed clusters
// still hold old data, a queued write of part of a subcluster into a new
// cluster placed there zeroes the rest of its subcluster first (the
// allocator's synchronous step, zeroThenWrite), so no old byte shows:
// qemu-io reads zeros around the data.
func TestQueue_AllocXL2Reused(t *testing.T) {
	t.Parallel()
	const cs = 64 << 10
	path := filepath.Join(t.TempDir(), "reused.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", path, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 256k", path)
	// Freed, with the old bytes left in the file (no hole punched).
	testkit.MustRun(t, "qemu-io", "--image-opts", "-c", "discard 0 256k", "driver=qcow2,pass-discard-request=off,file.filename="+path)
	im, q := openXL2Queue(t, path)
	reqs := []*block.Req{
		{Op: block.OpWrite, Off: 8*cs + 100, Buf: bytes.Repeat([]byte{0x31}, 1000)},  // part of subcluster 0
		{Op: block.OpWrite, Off: 9*cs + 4096, Buf: bytes.Repeat([]byte{0x32}, 4096)}, // whole subclusters 2-3
	}
	m := queuedPaths(t, im, q, reqs...)
	if m.QueueAlloc != 2 || m.QueueAllocSync != 0 || m.QueueSlow != 0 {
		t.Errorf("%d allocator (%d handed back), %d slow: want 2, 0, 0", m.QueueAlloc, m.QueueAllocSync, m.QueueSlow)
	}
	if m.FreshSkips != 0 || m.Fallocates+m.ZeroPadBytes == 0 {
		t.Errorf("%d fresh skips, %d fallocates, %d zero-pad bytes: want the clusters in freed space, zeroed around the partial write",
			m.FreshSkips, m.Fallocates, m.ZeroPadBytes)
	}
	// Subcluster 0 of 512k is allocated: its bytes around the data are
	// read from the host.
	closeCheckRead(t, q, im, path,
		"read -P 0 512k 100", "read -P 0x31 524388 1000", "read -P 0 525388 64436",
		"read -P 0 576k 4k", "read -P 0x32 580k 4k", "read -P 0 584k 56k")
}

// closeCheckRead closes q and im, runs qemu-img check on path and reads
// it back with qemu-io's commands cmds (e.g. "read -P 1 0 4k").
func closeCheckRead(t *testing.T, q block.Queue, im *qcow2.Image, path string, cmds ...string) {
	t.Helper()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	imgcheck.File(t, path, qcow2.Options{})
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	testkit.MustRun(t, "qemu-io", append(args, path)...)
}

// openXL2Queue opens the image at path over an O_DIRECT io_uring file,
// reads its first sector (so the L2 slice is cached: the queue's owner
// only peeks at cached tables) and opens a queue on it; both close at
// the end of the test unless the test closes them first.
func openXL2Queue(t *testing.T, path string) (*qcow2.Image, block.Queue) {
	t.Helper()
	im, err := qcow2.Open(path, qcow2.Options{Opener: qcow2.Opener(uring.Opener(uring.Options{Direct: true}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	if err := im.Readv(0, [][]byte{make([]byte, 512)}); err != nil {
		t.Fatal(err)
	}
	q, err := im.NewQueue(16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() }) // runs before the image's
	return im, q
}

// queuedPaths runs reqs through q and returns the image's metrics over
// them (which path each took).
func queuedPaths(t *testing.T, im *qcow2.Image, q block.Queue, reqs ...*block.Req) qcow2.Metrics {
	t.Helper()
	m0 := im.Metrics()
	blocktest.MustComplete(t, q, reqs...)
	return im.Metrics().Sub(m0)
}
