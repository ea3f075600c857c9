package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Fault sweeps (after pebble's errorfs; QEMU iotests 026/289): each workload is
// rerun with an injected error at device op 0, 1, 2, ... (errordev.OnIndex,
// the op numbering includes OpenDevice), and with a disk that dies at op i
// (OnIndexSticky), until a run completes without the fault firing. For every
// faulty run:
//
//   - the call that hit the fault returns an error matching the injected
//     errno (EIO or ENOSPC), with no panic and no hang;
//   - the device as a power cut right after the failure would leave it
//     (CrashClone, nothing unflushed kept), and the device as the process
//     left it after Close (which may fail), both reopen, Check reports no
//     corruption (leaks are allowed), and every sector written before the
//     last successful Flush, and not rewritten since, reads back;
//   - after a one-off fault the engine must recover: a retried Flush that
//     succeeds makes every completed write durable, so everything but the
//     failed request's range reads back from the crash clone too;
//   - a sample of the reopened images passes qemu-img check (exit 2, i.e.
//     corruption, fails; leaks are fine).
//
// QRING_SWEEP_FULL=1 sweeps every op index of every workload; the default
// sweeps at most sweepDefaultPoints evenly spaced indices (with a seeded
// phase) per workload and fault kind, to stay within the make test budget.

const (
	sweepSize          = 1 << 20 // virtual size unless a workload needs more
	sweepSector        = 512
	sweepDefaultPoints = 30
	sweepRunTimeout    = 30 * time.Second
	sweepQemuEvery     = 10
)

// sweepModel is what the guest may rely on.
type sweepModel struct {
	cur     []byte // guest view if every completed request is durable
	flushed []byte // guest view at the last successful Flush
	dirty   []bool // sectors changed (or attempted) since that Flush
	failed  []bool // sectors of requests that failed: unknown forever
	backing []byte
}

func newSweepModel(size int64, backing []byte) *sweepModel {
	m := &sweepModel{
		cur:     make([]byte, size),
		dirty:   make([]bool, size/sweepSector),
		failed:  make([]bool, size/sweepSector),
		backing: backing,
	}
	copy(m.cur, backing)
	m.flushed = append([]byte(nil), m.cur...)
	return m
}

// snapshot copies what a verification needs.
func (m *sweepModel) snapshot() *sweepModel {
	return &sweepModel{
		flushed: append([]byte(nil), m.flushed...),
		dirty:   append([]bool(nil), m.dirty...),
		failed:  append([]bool(nil), m.failed...),
	}
}

func (m *sweepModel) mark(v []bool, off, n int64) {
	if n <= 0 {
		return
	}
	for s := off / sweepSector; s <= (off+n-1)/sweepSector && s < int64(len(v)); s++ {
		v[s] = true
	}
}

// sweepRun wraps an image and keeps the model in step with the requests
// that completed. Each request records its range as dirty before it is
// issued (a failed request may have changed part of it). After a failed
// request the next ones do nothing and return its error, so a workload
// runs its steps without checking each and returns the last one's error.
type sweepRun struct {
	im  *Image
	m   *sweepModel
	cs  int64
	err error // the first failed request
	op  string
	// snaps is the guest view at each snapshot's creation.
	snaps map[string][]byte
	// growMode is resize's preallocation of a growth ("": none).
	growMode string
}

func (r *sweepRun) fail(what string, off, n int64, err error) error {
	r.m.mark(r.m.failed, off, n)
	r.err, r.op = err, fmt.Sprintf("%s(%d, %d)", what, off, n)
	return err
}

func (r *sweepRun) write(off int64, b []byte) error {
	if r.err != nil {
		return r.err
	}
	n := int64(len(b))
	r.m.mark(r.m.dirty, off, n)
	if _, err := r.im.WriteAt(b, off); err != nil {
		return r.fail("WriteAt", off, n, err)
	}
	copy(r.m.cur[off:], b)
	return nil
}

func (r *sweepRun) zero(off, n int64, f block.Flags) error {
	if r.err != nil {
		return r.err
	}
	r.m.mark(r.m.dirty, off, n)
	if err := r.im.WriteZeroes(off, n, f); err != nil {
		return r.fail("WriteZeroes", off, n, err)
	}
	clear(r.m.cur[off : off+n])
	return nil
}

func (r *sweepRun) discard(off, n int64) error {
	if r.err != nil {
		return r.err
	}
	r.m.mark(r.m.dirty, off, n)
	if err := r.im.Discard(off, n); err != nil {
		return r.fail("Discard", off, n, err)
	}
	var bd block.Device
	if r.m.backing != nil {
		bd = memdev.FromBytes(r.m.backing, memdev.Options{})
	}
	discardModel(r.im, r.m.cur, off, n, r.cs, bd)
	return nil
}

func (r *sweepRun) flush() error {
	if r.err != nil {
		return r.err
	}
	if err := r.im.Flush(); err != nil {
		return r.fail("Flush", 0, 0, err)
	}
	copy(r.m.flushed, r.m.cur)
	clear(r.m.dirty)
	return nil
}

// compressed writes one cluster with WriteCompressed.
func (r *sweepRun) compressed(off int64, b []byte) error {
	if r.err != nil {
		return r.err
	}
	n := int64(len(b))
	r.m.mark(r.m.dirty, off, n)
	if err := r.im.WriteCompressed(off, b); err != nil {
		return r.fail("WriteCompressed", off, n, err)
	}
	copy(r.m.cur[off:], b)
	return nil
}

// resize grows (Truncate) or shrinks (Shrink) the disk within the
// model's size: the range past the smaller size reads as zeros after
// either, and is unknown after a failure.
func (r *sweepRun) resize(size int64) error {
	if r.err != nil {
		return r.err
	}
	cur, err := r.im.Size()
	if err != nil {
		return r.fail("Size", 0, 0, err)
	}
	lo := min(cur, size)
	end := int64(len(r.m.cur))
	r.m.mark(r.m.dirty, lo, end-lo)
	if size < cur {
		err = r.im.Shrink(size)
	} else {
		err = r.im.TruncatePrealloc(size, r.growMode)
	}
	if err != nil {
		return r.fail(fmt.Sprintf("resize(%d, %q)", size, r.growMode), lo, end-lo, err)
	}
	clear(r.m.cur[lo:])
	return nil
}

// makeEmpty runs MakeEmpty: the disk reads its backing file (zeros
// past its end) everywhere, or is unknown after a failure.
func (r *sweepRun) makeEmpty() error {
	if r.err != nil {
		return r.err
	}
	n := int64(len(r.m.cur))
	r.m.mark(r.m.dirty, 0, n)
	if err := r.im.MakeEmpty(); err != nil {
		return r.fail("MakeEmpty", 0, n, err)
	}
	clear(r.m.cur)
	copy(r.m.cur, r.m.backing)
	return nil
}

// amend runs an operation that changes no guest data.
func (r *sweepRun) amend(what string, f func() error) error {
	if r.err != nil {
		return r.err
	}
	if err := f(); err != nil {
		return r.fail(what, 0, 0, err)
	}
	return nil
}

// snapshot runs a snapshot operation ("create", "delete" or "apply")
// on the snapshot named name. The guest view changes only with a
// successful apply (to the view at the create); after a failed apply it
// is unknown everywhere.
func (r *sweepRun) snapshot(op, name string) error {
	if r.err != nil {
		return r.err
	}
	if r.snaps == nil {
		r.snaps = map[string][]byte{}
	}
	size := int64(len(r.m.cur))
	var err error
	switch op {
	case "create":
		if _, err = r.im.CreateSnapshot(name); err == nil {
			r.snaps[name] = append([]byte(nil), r.m.cur...)
		}
	case "delete":
		err = r.im.DeleteSnapshot(name)
	case "apply":
		r.m.mark(r.m.dirty, 0, size)
		if err = r.im.ApplySnapshot(name); err != nil {
			return r.fail(op+"Snapshot", 0, size, err)
		}
		copy(r.m.cur, r.snaps[name])
		return nil
	default:
		panic(op)
	}
	if err != nil {
		return r.fail(op+"Snapshot", 0, 0, err)
	}
	return nil
}

// queued writes reqs through a Queue on the image, all in one Submit,
// and waits for them: each completed write is in the model, each failed
// one's range is unknown (the first failure is the run's error).
func (r *sweepRun) queued(reqs ...*block.Req) error {
	if r.err != nil {
		return r.err
	}
	q, err := r.im.NewQueue(len(reqs))
	if err != nil {
		return r.fail("NewQueue", 0, 0, err)
	}
	for _, rq := range reqs {
		r.m.mark(r.m.dirty, rq.Off, int64(len(rq.Buf)))
	}
	if err := q.Submit(reqs...); err != nil {
		q.Close()
		return r.fail("Submit", 0, 0, err)
	}
	err = block.Drain(q)
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	for _, rq := range reqs {
		n := int64(len(rq.Buf))
		if rq.Err != nil {
			if r.err == nil {
				r.fail("queued write", rq.Off, n, rq.Err)
			} else {
				r.m.mark(r.m.failed, rq.Off, n)
			}
			continue
		}
		copy(r.m.cur[rq.Off:], rq.Buf)
	}
	if err != nil && r.err == nil {
		return r.fail("queue", 0, 0, err)
	}
	return r.err
}

type sweepWorkload struct {
	name    string
	size    int64 // virtual size (default sweepSize)
	co      CreateOptions
	o       Options
	backing bool
	run     func(r *sweepRun) error
	// damage, if set, writes guest data and then damages the new
	// image's metadata before the run; it returns the guest view. A
	// failure in the run's repair (a Check with Repair) or in the open
	// leaves the damage in place: the verification then repairs once
	// more, and the repaired image must be clean.
	damage func(t testing.TB, mem *memdev.Dev) []byte
}

func sweepWorkloads() []sweepWorkload {
	p := func(n int, s byte) []byte { return pattern(n, s) }
	return []sweepWorkload{
		{name: "alloc", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			for i, off := range []int64{0, 8192, 3 * 4096, 100000, 900000} {
				r.write(off, p(6000, byte(i+1)))
				if i == 2 {
					r.flush()
				}
			}
			r.write(2000, p(3000, 0x77)) // rewrite in place
			return r.flush()
		}},
		{name: "alloc-prealloc-off", co: CreateOptions{ClusterSize: 4096}, o: Options{Prealloc: "off"}, run: func(r *sweepRun) error {
			r.write(1000, p(5000, 1))
			r.flush()
			r.write(40000, p(100, 2))
			return r.flush()
		}},
		{name: "alloc-backing", co: CreateOptions{ClusterSize: 4096}, backing: true, run: func(r *sweepRun) error {
			r.write(0, p(8192, 1)) // whole clusters
			r.flush()
			r.write(65536, p(4096, 2))
			return r.flush()
		}},
		{name: "cow-backing", co: CreateOptions{ClusterSize: 4096}, backing: true, run: func(r *sweepRun) error {
			// Partial-cluster writes over backing data: head and tail COW.
			r.write(1000, p(100, 1))
			r.flush()
			r.write(4096*5+3000, p(2000, 2)) // spans two clusters
			r.write(4096*9+512, p(512, 3))
			return r.flush()
		}},
		{name: "cow-backing-v2", co: CreateOptions{ClusterSize: 4096, Compat: "0.10"}, backing: true, run: func(r *sweepRun) error {
			r.write(700, p(1000, 1))
			r.flush()
			return r.write(3*4096+4000, p(300, 2))
		}},
		{name: "zero", co: CreateOptions{ClusterSize: 4096}, backing: true, run: func(r *sweepRun) error {
			r.write(0, p(8*4096, 1))
			r.flush()
			// Whole clusters kept allocated, partial edges written.
			r.zero(1000, 2*4096, 0)
			r.flush()
			// Whole clusters freed (MayUnmap), and over backing only.
			r.zero(4*4096, 2*4096, block.MayUnmap)
			r.zero(20*4096, 4096, block.MayUnmap)
			r.flush()
			return r.write(4*4096+100, p(200, 2)) // reallocate a freed cluster
		}},
		{name: "zero-nobacking", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			r.write(4096, p(4*4096, 1))
			r.flush()
			r.zero(4096, 2*4096, block.MayUnmap)
			r.zero(3*4096+10, 5000, 0)
			return r.flush()
		}},
		{name: "discard", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			r.write(0, p(6*4096, 1))
			r.flush()
			r.discard(4096, 3*4096)
			r.flush()
			// The freed clusters are reused: a write that must not see
			// the old data or lose the new after a crash.
			r.write(10*4096, p(2*4096+100, 2))
			return r.flush()
		}},
		{name: "discard-backing", co: CreateOptions{ClusterSize: 4096}, backing: true, run: func(r *sweepRun) error {
			r.write(0, p(4*4096, 1))
			r.flush()
			r.discard(0, 2*4096)
			return r.flush()
		}},
		{name: "new-l2", co: CreateOptions{ClusterSize: 512}, run: func(r *sweepRun) error {
			// 512-byte clusters: one L2 table maps 32 KiB; write into
			// an empty L1 entry, flushed, then another.
			r.write(0, p(100, 1))
			r.flush()
			r.write(65536+5000, p(300, 2))
			r.flush()
			return r.write(200000, p(4096, 3))
		}},
		{name: "new-refblock", co: CreateOptions{ClusterSize: 512, RefcountBits: 64}, run: func(r *sweepRun) error {
			// A refblock covers 64 clusters: 40 KiB of data needs a
			// second one.
			for i := int64(0); i < 4; i++ {
				r.write(i*12288, p(10240, byte(i+1)))
				if i == 1 {
					r.flush()
				}
			}
			return r.flush()
		}},
		{name: "reftable-growth", size: 4 << 20, co: CreateOptions{ClusterSize: 512, RefcountBits: 64}, run: func(r *sweepRun) error {
			// One reftable cluster covers 64 refblocks * 64 clusters =
			// 2 MiB of host space: 2.25 MiB of data grows the table.
			const chunk = 256 << 10
			for i := int64(0); i < 9; i++ {
				r.write(i*chunk, p(chunk, byte(i+1)))
				if i%4 == 3 {
					r.flush()
				}
			}
			return r.flush()
		}},
		{name: "lazy", co: CreateOptions{ClusterSize: 4096, LazyRefcounts: true}, run: func(r *sweepRun) error {
			r.write(0, p(5000, 1))
			r.flush()
			r.discard(0, 4096)
			r.write(600000, p(5000, 2))
			return r.flush()
		}},
		// Encrypted (crypt_io.go): misaligned writes (sector
		// read-modify-write), encrypted COW from backing data and from
		// the old cluster, encrypted zero writes.
		{name: "luks", co: CreateOptions{ClusterSize: 4096, Encrypt: sweepLUKS}, o: Options{Passphrase: sweepLUKS.Passphrase}, backing: true, run: func(r *sweepRun) error {
			r.write(1000, p(100, 1))
			r.flush()
			r.write(4096*5+3000, p(2000, 2)) // spans two clusters
			r.write(1003, p(7, 3))           // in place, inside a sector
			r.flush()
			r.zero(4096*5+100, 300, 0)
			return r.flush()
		}},
		{name: "queue-alloc", co: CreateOptions{ClusterSize: 65536}, run: func(r *sweepRun) error {
			// Queued writes into new clusters go to the queue's
			// allocator (Q16) as one batch: a group of three writes in
			// one cluster, a write inside one, a whole cluster in 16
			// pieces, a misaligned one, and one into a cluster that
			// has a write out already (parked behind it).
			w := func(off int64, n int, s byte) *block.Req {
				return &block.Req{Op: block.OpWrite, Off: off, Buf: p(n, s)}
			}
			reqs := []*block.Req{w(0, 4096, 1), w(4096, 4096, 2), w(8192, 4096, 3), w(65536+8192, 4096, 4)}
			for i := range 16 {
				reqs = append(reqs, w(131072+int64(i)*4096, 4096, byte(10+i)))
			}
			reqs = append(reqs, w(300000, 5000, 5), w(320000, 4000, 6))
			r.queued(reqs...)
			r.flush()
			// An overwrite (fast path) and two more allocations.
			r.queued(w(0, 4096, 7), w(524288, 4096, 8), w(589824+61440, 4096, 9))
			return r.flush()
		}},
		{name: "queue-alloc-xl2", co: CreateOptions{ClusterSize: 65536, ExtendedL2: true}, backing: true, run: func(r *sweepRun) error {
			// The allocator on extended L2 (Q16) over a backing file:
			// a group of two whole-subcluster writes into a new
			// cluster, a write of part of a subcluster (its rest copied
			// from the backing file), and a second write into the first
			// cluster (parked, then its own allocation in the same host
			// cluster); then more subclusters of an allocated cluster.
			w := func(off int64, n int, s byte) *block.Req {
				return &block.Req{Op: block.OpWrite, Off: off, Buf: p(n, s)}
			}
			r.queued(w(0, 4096, 1), w(4096, 4096, 2), w(65536+700, 1000, 3), w(16384, 2048, 4))
			// (A fault may make the allocator hand writes back to
			// the synchronous path: TestQueue_AllocXL2 checks that it
			// does not without one.)
			if m := r.im.Metrics(); r.err == nil && (m.QueueAlloc != 4 || m.QueueSlow != 0) {
				return fmt.Errorf("%d queued writes allocated, %d slow: want 4, 0", m.QueueAlloc, m.QueueSlow)
			}
			r.flush()
			r.queued(w(32768, 8192, 5), w(65536+30000, 100, 6))
			return r.flush()
		}},
		// Internal snapshots: counts raised and dropped, COPIED cleared
		// and set again by the counts, a shared cluster and its L2
		// table copied on write, tables switched.
		{name: "snapshot", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			r.write(0, p(3*4096, 1))
			r.write(40*4096, p(4096, 2))
			r.flush()
			r.snapshot("create", "a")
			r.write(4096, p(4096, 3))
			r.snapshot("create", "b")
			r.snapshot("delete", "a")
			r.write(8*4096, p(4096, 4))
			r.snapshot("apply", "b")
			r.write(0, p(512, 5))
			r.snapshot("delete", "b")
			return r.flush()
		}},
		// Compressed clusters written, partly overwritten (a COW of a
		// compressed cluster), discarded and written again.
		{name: "compressed", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			r.compressed(0, bytes.Repeat([]byte("qring"), 820)[:4096])
			r.compressed(4096, p(4096, 1)) // does not shrink: a normal cluster
			r.compressed(2*4096, bytes.Repeat([]byte{7}, 4096))
			r.flush()
			r.write(100, p(300, 2))
			r.discard(2*4096, 4096)
			r.flush()
			return r.compressed(2*4096, bytes.Repeat([]byte{9, 8}, 2048))
		}},
		// A shrink that discards data past the new end (its L2 tables
		// too) and a grow that needs a longer L1 (an L2 table maps 2
		// MiB here): the range past the old end reads as zeros.
		{name: "resize", size: 8 << 20, co: CreateOptions{ClusterSize: 4096, Size: 2 << 20}, run: func(r *sweepRun) error {
			r.resize(8 << 20)
			r.write(0, p(4096, 1))
			r.write(5<<20+100, p(9000, 2))
			r.write(7<<20, p(4096, 3))
			r.flush()
			r.resize(4 << 20)
			r.write(3<<20, p(4096, 4))
			r.resize(8 << 20)
			r.write(6<<20, p(100, 5))
			return r.flush()
		}},
		// Growths that preallocate (qemu-img resize --preallocation=):
		// falloc and full give the range its space before linking it,
		// after a refcount area at the file's end (QEMU's order); a
		// failure cuts the file back. 512-byte clusters: the area
		// needs new refcount blocks and a new table.
		{name: "resize-falloc", size: 8 << 20, co: CreateOptions{ClusterSize: 512, Size: 1 << 20}, run: func(r *sweepRun) error {
			r.write(0, p(4096, 1))
			r.flush()
			r.growMode = PreallocFalloc
			r.resize(3 << 20)
			r.write(2<<20+100, p(3000, 2))
			r.growMode = PreallocFull
			r.resize(6 << 20)
			r.write(5<<20, p(4096, 3))
			r.growMode = PreallocMetadata
			r.resize(8 << 20)
			r.write(7<<20+512, p(1000, 4))
			return r.flush()
		}},
		// qemu-img amend's changes: refcount width (every refcount
		// structure rewritten), lazy refcounts on and off, and a
		// downgrade to version 2, between writes.
		{name: "amend", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			r.write(0, p(3*4096, 1))
			r.amend("SetRefcountBits(64)", func() error { return r.im.SetRefcountBits(64) })
			r.write(5*4096, p(4096, 2))
			r.amend("SetLazyRefcounts(true)", func() error { return r.im.SetLazyRefcounts(true) })
			r.write(9*4096+7, p(5000, 3))
			r.flush()
			r.amend("SetLazyRefcounts(false)", func() error { return r.im.SetLazyRefcounts(false) })
			r.amend("SetRefcountBits(16)", func() error { return r.im.SetRefcountBits(16) })
			r.amend("SetVersion(2)", func() error { return r.im.SetVersion(2) })
			r.write(4096, p(4096, 4))
			return r.flush()
		}},
		// Zero clusters over backing data and preallocated zero
		// clusters expanded (the work of a downgrade), a snapshot
		// sharing a table with them, then the disk made empty (what
		// qemu-img commit leaves in the top image).
		{name: "expand-empty", co: CreateOptions{ClusterSize: 4096}, backing: true, run: func(r *sweepRun) error {
			r.write(0, p(4*4096, 1))
			r.write(20*4096, p(4096, 2))
			r.flush()
			r.zero(4096, 2*4096, 0)
			r.zero(10*4096, 4096, 0)
			r.snapshot("create", "s")
			r.zero(20*4096, 4096, 0)
			r.amend("ExpandZeroClusters", func() error { return r.im.ExpandZeroClusters() })
			r.write(11*4096+9, p(100, 3))
			r.flush()
			return r.makeEmpty()
		}},
		// check -r all on leaked clusters, a COPIED flag set on a
		// cluster counted twice and one missing on a cluster counted
		// once, and a used cluster counted 0 (fixed in place, before
		// anything may reuse it).
		{name: "repair", co: CreateOptions{ClusterSize: 4096}, o: Options{Repair: true}, damage: sweepDamage, run: func(r *sweepRun) error {
			r.amend("Check(RepairAll)", func() error {
				res, err := r.im.Check(CheckOptions{Repair: RepairAll})
				if err == nil && res.Err != nil {
					err = res.Err // an I/O error stopped part of it
				}
				if err == nil && (res.Corruptions != 0 || res.Leaks != 0) {
					err = fmt.Errorf("repair left %d corruptions, %d leaks: %v", res.Corruptions, res.Leaks, head(res.Messages, 4))
				}
				return err
			})
			r.write(12*4096, p(3*4096, 5)) // allocates: must not reuse a used cluster
			return r.flush()
		}},
		{name: "flush-only", co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			for i := int64(0); i < 3; i++ {
				r.write(i*4096*7, p(4096, byte(i+1)))
			}
			r.flush()
			return r.flush()
		}},
	}
}

// sweepDamage writes four data clusters into the image on mem and
// then, in the metadata: counts guest cluster 0's data cluster twice
// (a leak, and COPIED on a cluster counted twice), clears COPIED in
// cluster 1's entry, counts cluster 2's data cluster 0, and leaks a
// cluster past the data. It returns the guest view.
func sweepDamage(t testing.TB, mem *memdev.Dev) []byte {
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(4*4096, 3)
	mustWrite(t, im, data, 0)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	hdr := make([]byte, 72)
	mem.Readv(0, [][]byte{hdr})
	u64 := func(off uint64) uint64 {
		b := make([]byte, 8)
		mem.Readv(int64(off), [][]byte{b})
		return be.Uint64(b)
	}
	put := func(off uint64, b []byte) {
		if err := mem.Writev(int64(off), [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	l2 := u64(be.Uint64(hdr[40:])) & format.L1OffsetMask
	rb := u64(be.Uint64(hdr[48:])) // refcount block 0 (16-bit counts)
	ref := func(hostOff uint64, v uint16) {
		put(rb+2*(hostOff/4096), []byte{byte(v >> 8), byte(v)})
	}
	d0 := u64(l2) & format.L2OffsetMask
	ref(d0, 2)
	e1 := u64(l2 + 8)
	be.PutUint64(hdr[:8], e1&^format.OflagCopied)
	put(l2+8, hdr[:8])
	ref(u64(l2+16)&format.L2OffsetMask, 0)
	ref(64*4096, 1)
	return data
}

func sweepBacking(size int64) []byte {
	b := make([]byte, size/2)
	for i := range b {
		b[i] = byte(i/512) | 0x81
	}
	return b
}

// firedOp records the first op an injector failed.
type firedOp struct {
	mu   sync.Mutex
	op   errordev.Op
	off  int64
	n    int64
	seen bool
}

func (f *firedOp) wrap(inj errordev.Injector) errordev.Injector {
	return errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		err := inj.MaybeError(op, off, n)
		if err != nil {
			f.mu.Lock()
			if !f.seen {
				f.op, f.off, f.n, f.seen = op, off, n, true
			}
			f.mu.Unlock()
		}
		return err
	})
}

type sweepKind struct {
	name   string
	errno  syscall.Errno
	sticky bool
}

// sweepKinds are the fault kinds of a full sweep; the default sweep runs
// the one-off EIO at every point (up to sweepDefaultPoints) and the dying
// disk with ENOSPC at a third as many.
var sweepKinds = []sweepKind{
	{"EIO", syscall.EIO, false},
	{"ENOSPC-sticky", syscall.ENOSPC, true},
	{"ENOSPC", syscall.ENOSPC, false},
	{"EIO-sticky", syscall.EIO, true},
}

func sweepFull() bool { return os.Getenv("QRING_SWEEP_FULL") == "1" }

// sweepT is the T of one sweep (a workload and a fault kind): it counts
// the errors reported through it, so that the give-up counter of sweepOne
// sees each fault point's own failures (t.Failed() stays true once one
// point failed, and would count every later point as failing).
type sweepT struct {
	testing.TB
	errs atomic.Int64
}

func (t *sweepT) Errorf(format string, args ...any) {
	t.TB.Helper()
	t.errs.Add(1)
	t.TB.Errorf(format, args...)
}

func (t *sweepT) Error(args ...any) {
	t.TB.Helper()
	t.errs.Add(1)
	t.TB.Error(args...)
}

func (t *sweepT) Fail() {
	t.TB.Helper()
	t.errs.Add(1)
	t.TB.Fail()
}

// errors is how many errors were reported through t so far.
func (t *sweepT) errors() int64 { return t.errs.Load() }

type sweepStats struct {
	mu                               sync.Mutex
	runs, faults, reopens, qemuRuns  int
	swallowed, recovered, openFaults int
}

func runSweep(t *testing.T, wls []sweepWorkload) {
	seed := testkit.Seed(t)
	var st sweepStats
	for _, wl := range wls {
		t.Run(wl.name, func(t *testing.T) {
			for ki, k := range sweepKinds {
				if ki >= 2 && !sweepFull() {
					break
				}
				t.Run(k.name, func(t *testing.T) {
					sweepOne(t, wl, k, seed^uint64(ki)<<32, &st)
				})
			}
		})
	}
	t.Logf("fault sweep: %d runs, %d faults injected, %d reopened images checked, %d qemu-img checks, %d open faults, %d recovered after retry, %d faults swallowed",
		st.runs, st.faults, st.reopens, st.qemuRuns, st.openFaults, st.recovered, st.swallowed)
}

// sweepRetries is how many times a fault point a run ended before is run
// again (sweepOne).
const sweepRetries = 3

// sweepGiveUp is how many failing fault points end a sweep (one workload
// and fault kind) early.
const sweepGiveUp = 3

// sweepOne sweeps one workload with one fault kind. It gives up after
// sweepGiveUp fault points that failed themselves.
func sweepOne(tb testing.TB, wl sweepWorkload, k sweepKind, seed uint64, st *sweepStats) {
	t := &sweepT{TB: tb}
	rng := rand.New(rand.NewPCG(seed, 99))
	// A clean run counts the ops.
	total, _ := sweepRunOnce(t, wl, k, -1, rng, st, false)
	if t.errors() > 0 {
		return
	}
	var idx []int64
	points := int64(sweepDefaultPoints)
	if k.sticky {
		points /= 3
	}
	if sweepFull() || total <= points {
		for i := int64(0); i <= total; i++ {
			idx = append(idx, i)
		}
	} else {
		step := float64(total) / float64(points)
		phase := rng.Float64() * step
		for j := int64(0); j < points; j++ {
			idx = append(idx, int64(phase+float64(j)*step))
		}
		idx = append(idx, total) // the point past the end: no fault
	}
	bad := 0
	for n, i := range idx {
		errs := t.errors()
		ops, fired := sweepRunOnce(t, wl, k, i, rng, st, n%sweepQemuEvery == 0)
		// A run may end sooner than the counting run: the clean-table
		// cache (ristretto, cache/doc.go) may drop or evict a table at
		// any time, so a run reads a table again or does not (the
		// reftable-growth workload: 1036 to 1040 ops in clean runs),
		// and the random full check at flush of the invariants build
		// loads tables through the caches. A point past the run's end
		// is run again, up to sweepRetries times; one still past it is
		// logged. A run that passed the point and did not fail it is
		// an injector error.
		for try := 0; !fired && i < total && ops <= i && try < sweepRetries; try++ {
			ops, fired = sweepRunOnce(t, wl, k, i, rng, st, false)
		}
		if !fired {
			switch {
			case i < total && ops <= i:
				t.Logf("fault at op %d of %d did not fire: the run ended before it (ops %d)", i, total, ops)
			case i < total:
				t.Errorf("fault at op %d of %d did not fire (ops %d)", i, total, ops)
			}
			break
		}
		if t.errors() > errs { // this point's own failures
			bad++
			if bad >= sweepGiveUp {
				t.Fatalf("giving up after %d failing fault points", bad)
			}
		}
	}
	t.Logf("%d device ops, %d fault points", total, len(idx))
}

// sweepRunOnce runs the workload with a fault at op at (-1: none) and
// checks the result; it returns the op count and whether a fault fired.
func sweepRunOnce(t testing.TB, wl sweepWorkload, k sweepKind, at int64, rng *rand.Rand, st *sweepStats, qemuCheck bool) (int64, bool) {
	t.Helper()
	size := wl.size
	if size == 0 {
		size = sweepSize
	}
	co := wl.co
	if co.Size == 0 { // else the disk starts smaller than the model
		co.Size = size
	}
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	if err := mem.Flush(); err != nil {
		t.Fatal(err)
	}
	var bdata []byte
	o := wl.o
	if wl.backing {
		bdata = sweepBacking(size)
		o.Backing = memdev.FromBytes(bdata, memdev.Options{})
	}
	m := newSweepModel(size, bdata)
	if wl.damage != nil {
		copy(m.cur, wl.damage(t, mem))
		copy(m.flushed, m.cur)
		if err := mem.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var inj errordev.Injector
	var ix *errordev.IndexInjector
	var fo firedOp
	if at >= 0 {
		ierr := errordev.ErrInjectedEIO
		if k.errno == syscall.ENOSPC {
			ierr = errordev.ErrInjectedENOSPC
		}
		if k.sticky {
			ix = errordev.OnIndexSticky(at, ierr)
		} else {
			ix = errordev.OnIndex(at, ierr)
		}
		inj = fo.wrap(ix)
	}
	ed := errordev.New(mem, inj, errordev.Options{})
	what := fmt.Sprintf("%s/%s fault at op %d", wl.name, k.name, at)

	// The run itself, bounded in time, with panics reported.
	var (
		r        *sweepRun
		wlErr    error
		openErr  error
		panicV   any
		stack    []byte
		crash    *memdev.Dev
		atCrash  *sweepModel
		retried  *memdev.Dev // after a successful retried Flush
		closeErr error
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				panicV, stack = v, make([]byte, 64<<10)
				stack = stack[:runtime.Stack(stack, false)]
			}
		}()
		im, err := OpenDevice(ed, o)
		if err != nil {
			openErr = err
			return
		}
		r = &sweepRun{im: im, m: m, cs: int64(im.Geometry().ClusterSize)}
		if wlErr = wl.run(r); wlErr == nil {
			wlErr = r.err // a workload returns its last step's error
		}
		// A power cut right after the failure: only what was flushed.
		crash, atCrash = mem.CrashClone(rng, 0), m.snapshot()
		if wlErr != nil && !k.sticky {
			// A one-off fault: the engine must recover, and a Flush
			// that succeeds now covers every completed write.
			if err := im.Flush(); err == nil {
				copy(m.flushed, m.cur)
				clear(m.dirty)
				retried = mem.CrashClone(rng, 0)
				st.mu.Lock()
				st.recovered++
				st.mu.Unlock()
			}
		}
		closeErr = im.Close() // may fail
	}()
	select {
	case <-done:
	case <-time.After(sweepRunTimeout):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: run hung for %v\n%s", what, sweepRunTimeout, buf)
	}
	st.mu.Lock()
	st.runs++
	if ix != nil && ix.Fired() > 0 {
		st.faults++
	}
	st.mu.Unlock()
	if panicV != nil {
		t.Errorf("%s: panic: %v\n%s", what, panicV, stack)
		return ed.Ops(), true
	}
	fired := ix != nil && ix.Fired() > 0
	injErr := func(err error) bool {
		return errors.Is(err, errordev.ErrInjected) && errors.Is(err, k.errno)
	}
	if openErr != nil {
		if !fired || !injErr(openErr) {
			t.Errorf("%s: open: %v (want the injected %v)", what, openErr, k.errno)
		}
		st.mu.Lock()
		st.openFaults++
		st.mu.Unlock()
		crash, atCrash = mem.CrashClone(rng, 0), m.snapshot()
	} else {
		switch {
		case !fired && wlErr != nil:
			t.Errorf("%s: clean run failed: %s: %v", what, r.op, wlErr)
		case fired && wlErr != nil && !injErr(wlErr):
			t.Errorf("%s: %s returned %v, want the injected %v", what, r.op, wlErr, k.errno)
		case fired && wlErr == nil && closeErr != nil && !injErr(closeErr):
			t.Errorf("%s: Close returned %v, want the injected %v", what, closeErr, k.errno)
		case fired && wlErr == nil && closeErr == nil:
			// The engine absorbed the fault (e.g. a retried write).
			// Legitimate only if nothing was lost; a swallowed
			// failed Flush or metadata write would show below.
			st.mu.Lock()
			st.swallowed++
			st.mu.Unlock()
			fo.mu.Lock()
			t.Logf("%s: fault on %v(%d, %d) not reported to the caller", what, fo.op, fo.off, fo.n)
			fo.mu.Unlock()
		}
	}
	if fo.seen {
		what += fmt.Sprintf(" [%v(%d, %d)", fo.op, fo.off, fo.n)
		if r != nil && r.op != "" {
			what += " in " + r.op
		}
		what += "]"
	}
	// A power cut inside a snapshot operation may leave COPIED out of
	// step with the counts, as QEMU's ordering does (verifySnapCrash);
	// so may a disk that died there. A one-off fault may not: the
	// retried Flush and the Close put the flags in step.
	var atCut, atEnd func([]string) bool // what may be repaired
	if r != nil && strings.Contains(r.op, "Snapshot") {
		atCut = onlyCopied
		if k.sticky {
			atEnd = onlyCopied
		}
	}
	if wl.damage != nil && (r == nil || strings.HasPrefix(r.op, "Check")) {
		// The repair did not finish: the damage may remain.
		any := func([]string) bool { return true }
		atCut, atEnd = any, any
	}
	// Reopen what a power cut would leave, and what the process left.
	sweepVerify(t, what+" (crash clone)", crash, o, atCut, atCrash, false, st)
	if retried != nil {
		retriedOK := atEnd
		if wl.damage == nil {
			retriedOK = nil
		}
		sweepVerify(t, what+" (crash clone after retried flush)", retried, o, retriedOK, m, false, st)
	}
	sweepVerify(t, what+" (current)", memdev.FromBytes(mem.Bytes(), memdev.Options{}), o, atEnd, m, qemuCheck, st)
	return ed.Ops(), fired
}

// sweepVerify reopens dev writable (a dirty lazy-refcount image is
// repaired), checks it and compares the guest data with the model.
// Corruptions that repairable accepts (the check's messages; nil: none)
// are repaired (check -r all) instead of failing the test, and the
// repaired image must be clean.
func sweepVerify(t testing.TB, what string, dev *memdev.Dev, o Options, repairable func([]string) bool, m *sweepModel, qemu bool, st *sweepStats) {
	t.Helper()
	st.mu.Lock()
	st.reopens++
	st.mu.Unlock()
	o.ReadOnly = false
	im, err := OpenDevice(dev, o)
	if err != nil {
		t.Errorf("%s: reopen: %v", what, err)
		return
	}
	r, err := im.Check(CheckOptions{})
	if err == nil && repairable != nil && r.CheckErrors == 0 && r.Corruptions != 0 && repairable(r.Messages) {
		if r, err = im.Check(CheckOptions{Repair: RepairAll}); err == nil {
			r, err = im.Check(CheckOptions{})
		}
	}
	if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		t.Errorf("%s: check: %v corruptions=%d errors=%d %v", what, err, r.Corruptions, r.CheckErrors, head(r.Messages, 8))
	}
	got := testkit.ReadAll(t, im)
	if n := len(m.flushed); len(got) < n {
		// A disk smaller than the model (resize): past its end the
		// model holds zeros, or the range is unknown.
		got = append(got, make([]byte, n-len(got))...)
	}
	for s := int64(0); s < int64(len(m.dirty)); s++ {
		if m.dirty[s] || m.failed[s] {
			continue
		}
		lo, hi := s*sweepSector, (s+1)*sweepSector
		if i := testkit.FirstDiff(got[lo:hi], m.flushed[lo:hi]); i >= 0 {
			t.Errorf("%s: flushed data lost at guest offset %d: got %#x want %#x", what, lo+int64(i), got[lo+int64(i)], m.flushed[lo+int64(i)])
			break
		}
	}
	if err := im.Close(); err != nil {
		t.Errorf("%s: close after reopen: %v", what, err)
	}
	if qemu && testkit.HaveQemu() {
		st.mu.Lock()
		st.qemuRuns++
		st.mu.Unlock()
		qemuImgCheckBytes(t, what, dev.Bytes(), o.Backing != nil, o.Passphrase)
	}
}

// qemuImgCheckBytes writes img to a file and runs qemu-img check on it:
// corruption or a failed check fails, leaks do not; a failing image is
// kept (testkit.KeepFile).
func qemuImgCheckBytes(t testing.TB, what string, img []byte, hasBacking bool, passphrase []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sweep.qcow2")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	// The image names no backing file (the test passes the backing
	// device directly), so qemu-img needs none.
	check := testkit.QemuCheckReport
	if passphrase != nil { // encrypted: qemu-img check needs the secret
		check = func(p string, ok func(testkit.QemuCheckResult) bool) error {
			return testkit.QemuCheckSecretReport(p, string(passphrase), ok)
		}
	}
	if err := check(p, testkit.QemuCheckResult.NoCorruption); err != nil {
		t.Errorf("%s: %v\nimage kept at %s", what, err, testkit.KeepFile(t, "sweep.qcow2", img))
	}
}

func sweepByName(names ...string) []sweepWorkload {
	var out []sweepWorkload
	for _, w := range sweepWorkloads() {
		for _, n := range names {
			if w.name == n {
				out = append(out, w)
			}
		}
	}
	return out
}

// TestFaultSweep_Alloc: allocating writes without and with a backing file,
// and with zero buffers (prealloc=off).
func TestFaultSweep_Alloc(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("alloc", "alloc-prealloc-off", "alloc-backing"))
}

// TestFaultSweep_Queue: queued allocating writes through the queue's
// allocator (Q16), in batches.
func TestFaultSweep_Queue(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("queue-alloc", "queue-alloc-xl2"))
}

// TestFaultSweep_COW: partial-cluster writes over backing data (v3, v2).
func TestFaultSweep_COW(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("cow-backing", "cow-backing-v2"))
}

// TestFaultSweep_Snapshot: internal snapshots created, deleted and
// applied between writes.
func TestFaultSweep_Snapshot(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("snapshot"))
}

// TestFaultSweep_Admin: compressed writes, resizes and amends.
func TestFaultSweep_Admin(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("compressed", "resize", "resize-falloc", "amend", "expand-empty", "repair"))
}

// TestFaultSweep_Zero: WriteZeroes with and without MayUnmap.
func TestFaultSweep_Zero(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("zero", "zero-nobacking"))
}

// TestFaultSweep_Discard: discards, then reuse of the freed clusters.
func TestFaultSweep_Discard(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("discard", "discard-backing"))
}

// TestFaultSweep_Tables: a new L2 table, a new refcount block, refcount
// table growth.
func TestFaultSweep_Tables(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("new-l2", "new-refblock", "reftable-growth"))
}

// TestFaultSweep_Flush: flushes, and lazy refcounts (dirty bit).
func TestFaultSweep_Flush(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("flush-only", "lazy"))
}

// recordT records what a sweep reports instead of failing the test:
// errors, and the fatal message (Fatal ends the goroutine, as on a T).
type recordT struct {
	testing.TB // the real T: Logf, Helper, TempDir
	mu         sync.Mutex
	errs       []string
	fatal      string
}

func (r *recordT) add(msg string) {
	r.mu.Lock()
	r.errs = append(r.errs, msg)
	r.mu.Unlock()
}

func (r *recordT) Errorf(format string, args ...any) { r.add(fmt.Sprintf(format, args...)) }
func (r *recordT) Error(args ...any)                 { r.add(fmt.Sprint(args...)) }
func (r *recordT) Fail()                             { r.add("Fail") }

func (r *recordT) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs) > 0 || r.fatal != ""
}

func (r *recordT) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordT) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *recordT) FailNow()          { r.Fatalf("FailNow") }

// TestFaultSweep_GiveUp checks the sweep's own accounting on a recording
// T, with a workload that loses the injected error (returns another one)
// in its first n faulty runs: with n=0 the sweep passes; with n=1 it
// fails with that one error and still runs every fault point (a point
// counts as failing for its own errors only, not because an earlier one
// failed); with every run it gives up after sweepGiveUp failing points.
func TestFaultSweep_GiveUp(t *testing.T) {
	errLost := errors.New("lost the injected error")
	sweep := func(n int) (*recordT, int) {
		left := n
		wl := sweepWorkload{name: fmt.Sprintf("lose-%d", n), co: CreateOptions{ClusterSize: 4096}, run: func(r *sweepRun) error {
			for i := range 4 {
				if err := r.write(int64(i)*8192, pattern(4096, byte(i+1))); err != nil {
					if left > 0 {
						left--
						return errLost
					}
					return err
				}
			}
			return r.flush()
		}}
		rec := &recordT{TB: t}
		var st sweepStats
		done := make(chan struct{})
		go func() {
			defer close(done)
			sweepOne(rec, wl, sweepKinds[0], 1, &st)
		}()
		<-done
		return rec, st.runs
	}
	lost := func(r *recordT) int {
		k := 0
		for _, e := range r.errs {
			if strings.Contains(e, errLost.Error()) {
				k++
			}
		}
		return k
	}

	clean, runs := sweep(0)
	if clean.Failed() {
		t.Fatalf("clean sweep failed: %q, fatal %q", clean.errs, clean.fatal)
	}
	if runs < 2*sweepGiveUp {
		t.Fatalf("only %d runs in the clean sweep", runs)
	}

	once, onceRuns := sweep(1)
	if len(once.errs) != 1 || lost(once) != 1 || once.fatal != "" || onceRuns != runs {
		t.Errorf("one lost error: errors %q, fatal %q, %d runs of %d", once.errs, once.fatal, onceRuns, runs)
	}

	every, everyRuns := sweep(1 << 30)
	if lost(every) != sweepGiveUp || every.fatal != fmt.Sprintf("giving up after %d failing fault points", sweepGiveUp) || everyRuns >= runs {
		t.Errorf("every error lost: errors %q, fatal %q, %d runs of %d", every.errs, every.fatal, everyRuns, runs)
	}
}

// TestFaultSweep_FreshDataWriteFailure is the regression test for the
// first bug the sweep found: an allocating write into fresh space (past
// the high-water mark, prealloc on, so only the guest data is written)
// whose data write fails still links the new cluster. writeWithCOW sets
// st.ready before the data write (to admit early writers, Q10), so
// allocWrite takes the "linked even if our own data write failed" path.
// The L2 entry then points at a cluster that lies wholly past the end of
// the file: after the next Flush (or Close) our Check and qemu-img check
// report corruption ("counting reference for region exceeding the end of
// the file by one cluster or more").
func TestFaultSweep_FreshDataWriteFailure(t *testing.T) {
	for _, k := range []struct {
		name string
		err  error
	}{{"EIO", errordev.ErrInjectedEIO}, {"ENOSPC", errordev.ErrInjectedENOSPC}} {
		t.Run(k.name, func(t *testing.T) {
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, CreateOptions{Size: sweepSize, ClusterSize: 4096}); err != nil {
				t.Fatal(err)
			}
			// Fail the (unique) 1000-byte data write, once.
			var fired bool
			inj := errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
				if op == errordev.Write && n == 1000 && !fired {
					fired = true
					return k.err
				}
				return nil
			})
			ed := errordev.New(mem, inj, errordev.Options{})
			im, err := OpenDevice(ed, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := im.WriteAt(pattern(1000, 1), 4096+100); !errors.Is(err, errordev.ErrInjected) {
				t.Fatalf("WriteAt: %v, want the injected error", err)
			}
			if !fired {
				t.Fatal("fault did not fire")
			}
			// The device is healthy again: Flush and Close succeed.
			if err := im.Flush(); err != nil {
				t.Fatalf("flush after the fault: %v", err)
			}
			if err := im.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			img := mem.Bytes()
			im2, err := OpenDevice(memdev.FromBytes(img, memdev.Options{}), Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im2.Close()
			r, err := im2.Check(CheckOptions{})
			if err != nil || r.Corruptions != 0 {
				t.Errorf("check after a failed fresh-cluster write: %v corruptions=%d %v", err, r.Corruptions, head(r.Messages, 4))
			}
			if testkit.HaveQemu() {
				qemuImgCheckBytes(t, "after a failed fresh-cluster write", img, false, nil)
			}
		})
	}
}

// sweepLUKS encrypts the "luks" workload (fixed iterations: fast).
var sweepLUKS = EncryptOptions{Format: "luks", Passphrase: []byte("sweep"), Iterations: 1000}

// TestFaultSweep_Encrypted: the encrypted data path under faults.
func TestFaultSweep_Encrypted(t *testing.T) {
	t.Parallel()
	runSweep(t, sweepByName("luks"))
}
