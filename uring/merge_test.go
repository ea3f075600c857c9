//go:build linux

package uring

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// seqWrites writes n blocks of bs bytes at 0, bs, 2bs... from depth
// goroutines that take the next block in order (qemu-img bench's pattern,
// which is what merging is for), and returns what it wrote.
func seqWrites(t *testing.T, f *File, n, bs, depth int, seed uint64) []byte {
	t.Helper()
	want := pattern(seed, n*bs)
	var next atomic.Int64
	if err := testkit.Parallel(depth, func(int) error {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return nil
			}
			var v [1][]byte
			v[0] = want[i*bs : (i+1)*bs]
			if err := f.Writev(int64(i*bs), v[:]); err != nil {
				return err
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestMerge_Sequential: adjacent concurrent writes merge (R8) and every
// byte lands; a second pass checks merged reads the same way.
func TestMerge_Sequential(t *testing.T) {
	for _, direct := range []bool{false, true} {
		f := openTemp(t, Options{Backend: Ring, Direct: direct})
		const n, bs = 4096, 4096
		var want []byte
		for round := 0; round < 20 && f.Metrics().Merged == 0; round++ {
			want = seqWrites(t, f, n, bs, 64, uint64(round))
		}
		m := f.Metrics()
		if m.Merged == 0 {
			t.Fatalf("direct=%v: no request merged in 20 rounds: %v", direct, m)
		}
		if !bytes.Equal(readAll(t, f, 0, n*bs), want) {
			t.Fatalf("direct=%v: data mismatch", direct)
		}
		// Concurrent adjacent reads, some past EOF (zeros, block B2).
		got := make([]byte, (n+64)*bs)
		var wg sync.WaitGroup
		var next atomic.Int64
		for g := 0; g < 64; g++ {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= n+64 {
						return
					}
					b := got[i*bs : (i+1)*bs]
					for k := range b {
						b[k] = 0xee
					}
					var v [1][]byte
					v[0] = b
					if err := f.Readv(int64(i*bs), v[:]); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if !bytes.Equal(got[:n*bs], want) || !bytes.Equal(got[n*bs:], make([]byte, 64*bs)) {
			t.Fatalf("direct=%v: merged reads returned wrong data", direct)
		}
		t.Logf("direct=%v: %v", direct, f.Metrics())
		noPinnedBuffers(t, f)
	}
}

// noPinnedBuffers fails if a free slot still holds a buffer address in
// any entry of its iovec arrays, used or not (R5: a freed slot never pins
// caller memory; putSlot clears only the used part, so this checks that
// nothing leaves addresses past the end).
func noPinnedBuffers(t *testing.T, f *File) {
	t.Helper()
	r := ringOf(t, f)
	for i := range r.slots {
		s := &r.slots[i]
		for _, v := range [][]unix.Iovec{s.iov[:cap(s.iov)], s.iov2[:cap(s.iov2)]} {
			for k := range v {
				if v[k].Base != nil {
					t.Fatalf("free slot %d pins a buffer in iovec %d", i, k)
				}
			}
		}
	}
}

// TestMerge_Off: NoMerge keeps one SQE per request.
func TestMerge_Off(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, NoMerge: true})
	want := seqWrites(t, f, 1024, 4096, 64, 1)
	if m := f.Metrics(); m.Merged != 0 || m.SQEs < 1024 {
		t.Fatalf("NoMerge: %v", m)
	}
	if !bytes.Equal(readAll(t, f, 0, len(want)), want) {
		t.Fatal("data mismatch")
	}
}

// batch runs do(0..n-1), each on its own goroutine, so that every
// request is queued (staged, R8) before the next one starts and none is
// submitted before all are queued: the whole batch reaches the kernel in
// one enter, and merging is deterministic. n must not exceed the ring's
// slots. It returns each request's error.
func batch(t *testing.T, f *File, n int, do func(i int) error) []error {
	t.Helper()
	queued := make(chan struct{})
	release := make(chan struct{})
	var hold atomic.Bool
	hold.Store(true)
	r := ringOf(t, f)
	r.testQueued = func() {
		if hold.Load() {
			queued <- struct{}{}
			<-release
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() {
			errs[i] = do(i)
		})
		<-queued
	}
	hold.Store(false)
	close(release)
	wg.Wait()
	r.testQueued = nil
	return errs
}

// ringOf is the ring under f's backend.
func ringOf(t *testing.T, f *File) *ring {
	t.Helper()
	switch b := f.io.(type) {
	case *ringIO:
		return b.r
	case *hybrid:
		return b.r
	}
	t.Fatalf("backend %v has no ring", f.Backend())
	return nil
}

// vecOf cuts b into bufs of size bs.
func vecOf(b []byte, bs int) [][]byte {
	v := make([][]byte, 0, len(b)/bs)
	for len(b) > 0 {
		v = append(v, b[:bs])
		b = b[bs:]
	}
	return v
}

// TestMerge_IovMax: a request with a long vector grows its slot's iovec
// array past IOV_MAX; adjacent requests staged behind it must not ride on
// it past 1024 iovecs (the kernel answers EINVAL, and every request of
// the merged SQE is resubmitted alone, counted in MergeSplits).
func TestMerge_IovMax(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring})
	const bs = 512
	const riders, per = 40, 8 // 1024 + 40*8 iovecs in all
	sizes := []int{maxIov}
	for range riders {
		sizes = append(sizes, per)
	}
	offs := make([]int, len(sizes)+1)
	for i, n := range sizes {
		offs[i+1] = offs[i] + n*bs
	}
	want := pattern(7, offs[len(sizes)])
	got := make([]byte, len(want))
	for _, write := range []bool{true, false} {
		before := f.Metrics()
		errs := batch(t, f, len(sizes), func(i int) error {
			if write {
				return f.Writev(int64(offs[i]), vecOf(want[offs[i]:offs[i+1]], bs))
			}
			return f.Readv(int64(offs[i]), vecOf(got[offs[i]:offs[i+1]], bs))
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("write=%v request %d: %v", write, i, err)
			}
		}
		if c := cap(ringOf(t, f).slots[0].iov); c <= maxIov {
			t.Fatalf("precondition: the long request's iovec array has cap %d, want > %d", c, maxIov)
		}
		m := f.Metrics().Sub(before)
		if m.MergeSplits != 0 || m.EAgainResubmits != 0 {
			t.Fatalf("write=%v: a merged SQE was refused (over IOV_MAX?): %v", write, m)
		}
		if m.Merged == 0 {
			t.Fatalf("write=%v: nothing merged: %v", write, m)
		}
		t.Logf("write=%v: %v", write, m)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data mismatch")
	}
	noPinnedBuffers(t, f)
}

// TestMerge_Split: a merged SQE that fails or comes back short is
// resubmitted request by request, so every request still gets its own,
// correct result and every byte lands. One batch of adjacent requests is
// staged before any enter, so the merge (and the split) always happens.
func TestMerge_Split(t *testing.T) {
	const n, bs = 16, 4096
	tests := []struct {
		name string
		hook func(res int32) int32
		// check the metrics of one batch
		check func(m Metrics) bool
	}{
		{"error", func(int32) int32 { return -int32(unix.EIO) },
			func(m Metrics) bool { return m.MergeSplits == 1 && m.EAgainResubmits == n }},
		// 16*4096/3: five requests complete, the sixth is short (its
		// remainder is resubmitted), ten are not reached (-EAGAIN).
		{"short", func(res int32) int32 { return res / 3 },
			func(m Metrics) bool { return m.MergeSplits == 0 && m.ShortResubmits == 1 && m.EAgainResubmits == 10 }},
		{"nothing", func(int32) int32 { return 0 },
			func(m Metrics) bool { return m.MergeSplits == 1 && m.EAgainResubmits == n }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := openTemp(t, Options{Backend: Ring})
			want := pattern(3, n*bs)
			got := make([]byte, n*bs)
			for _, write := range []bool{true, false} {
				// Only the first merged SQE is tampered with: the retried
				// requests must be able to succeed.
				var left atomic.Int32
				left.Store(1)
				ringOf(t, f).testSplit = func(res int32) int32 {
					if left.Add(-1) >= 0 {
						return tc.hook(res)
					}
					return res
				}
				before := f.Metrics()
				errs := batch(t, f, n, func(i int) error {
					if write {
						return block.WriteAt(f, want[i*bs:(i+1)*bs], int64(i*bs))
					}
					return block.ReadAt(f, got[i*bs:(i+1)*bs], int64(i*bs))
				})
				ringOf(t, f).testSplit = nil
				for i, err := range errs {
					if err != nil {
						t.Fatalf("write=%v request %d: %v", write, i, err)
					}
				}
				m := f.Metrics().Sub(before)
				if left.Load() > 0 || m.Merged < n-1 {
					t.Fatalf("write=%v: the batch did not merge into one SQE: %v", write, m)
				}
				if !tc.check(m) {
					t.Fatalf("write=%v: split not handled as expected: %v", write, m)
				}
				t.Logf("write=%v: %v", write, m)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("data mismatch after split")
			}
			noPinnedBuffers(t, f)
		})
	}
}
