//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a tmpfs of size bytes and returns its mount point; it
// skips without root.
func smallTmpfs(t *testing.T, size int64) string { return looptest.SmallTmpfs(t, size) }

// checkNoSpace checks the results of adjacent writes of bs bytes from
// want at 0, bs, ... into a file system that ran out of space: every
// request that succeeded reads back exactly, every one that failed
// failed with ENOSPC, some of each.
func checkNoSpace(t *testing.T, f *File, errs []error, want []byte, bs int) {
	t.Helper()
	ok := 0
	for i, err := range errs {
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Errorf("request %d: %v, want ENOSPC", i, err)
			}
			continue
		}
		ok++
		got := make([]byte, bs)
		if err := block.ReadAt(f, got, int64(i*bs)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[i*bs:(i+1)*bs]) {
			t.Errorf("request %d succeeded but its bytes read back wrong", i)
		}
	}
	if ok == 0 || ok == len(errs) {
		t.Fatalf("%d of %d writes succeeded: the file system did not fill up mid-batch", ok, len(errs))
	}
}

// TestReview46_MergedENOSPC (R8, R6): one merged SQE of adjacent writes
// into a tmpfs that has room for only part of them comes back short;
// the requests the transfer reached succeed with their bytes on disk,
// the rest retry alone and fail with ENOSPC, and none reports success
// for bytes that did not land.
func TestReview46_MergedENOSPC(t *testing.T) {
	const n, bs = 16, 64 << 10 // one merged SQE of 1 MiB
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			dir := smallTmpfs(t, 5*bs+bs/2)
			f, err := Open(filepath.Join(dir, "img"), Options{Backend: Ring, Create: true, Direct: direct})
			if err != nil {
				if direct && errors.Is(err, unix.EINVAL) {
					t.Skip("no O_DIRECT on tmpfs")
				}
				t.Fatal(err)
			}
			defer f.Close()
			want := pattern(46, n*bs)
			before := f.Metrics()
			errs := batch(t, f, n, func(i int) error {
				return block.WriteAt(f, want[i*bs:(i+1)*bs], int64(i*bs))
			})
			m := f.Metrics().Sub(before)
			if m.Merged < n-1 {
				t.Fatalf("the batch did not merge into one SQE: %v", m)
			}
			t.Logf("%v", m)
			checkNoSpace(t, f, errs, want, bs)
			noPinnedBuffers(t, f)
		})
	}
}

// TestReview46_QueueMergedENOSPC (U13): the same through a File's vector
// queue, whose merged SQE's short result sends the requests it did not
// fully reach to the slow path.
func TestReview46_QueueMergedENOSPC(t *testing.T) {
	const n, bs = 16, 64 << 10
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			dir := smallTmpfs(t, 5*bs+bs/2)
			f, err := Open(filepath.Join(dir, "img"), Options{Backend: Ring, Create: true, Direct: direct})
			if err != nil {
				if direct && errors.Is(err, unix.EINVAL) {
					t.Skip("no O_DIRECT on tmpfs")
				}
				t.Fatal(err)
			}
			defer f.Close()
			q, err := f.NewVecQueue(n)
			if err != nil {
				t.Fatal(err)
			}
			want := pattern(47, n*bs)
			reqs := make([]*block.Req, n)
			for i := range reqs {
				reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(i * bs), Buf: want[i*bs : (i+1)*bs]}
			}
			before := f.Metrics()
			if err := q.Submit(reqs...); err != nil {
				t.Fatal(err)
			}
			out := make([]*block.Req, n)
			for got := 0; got < n; {
				k, err := q.Wait(out, n-got)
				if err != nil {
					t.Fatal(err)
				}
				got += k
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if m := f.Metrics().Sub(before); m.Merged < n-1 {
				t.Fatalf("the batch did not merge into one SQE: %v", m)
			}
			errs := make([]error, n)
			for i, r := range reqs {
				errs[i] = r.Err
			}
			checkNoSpace(t, f, errs, want, bs)
		})
	}
}

// TestReview46_MergedFullDevice (R8, U6): merged O_DIRECT writes to a
// block device whose backing store fills up mid-batch (a loop device over
// a tmpfs with little room): every request that succeeded reads back,
// every one that failed names the errno (ENOSPC or EIO), and none
// reports success for bytes that did not land.
func TestReview46_MergedFullDevice(t *testing.T) {
	const n, bs = 16, 128 << 10 // two merged SQEs of 1 MiB
	dev := looptest.LoopDevice(t, 64<<20, 1<<20)
	f, err := Open(dev, Options{Backend: Ring, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := pattern(49, n*bs)
	before := f.Metrics()
	errs := batch(t, f, n, func(i int) error {
		return block.WriteAt(f, want[i*bs:(i+1)*bs], int64(i*bs))
	})
	m := f.Metrics().Sub(before)
	t.Logf("%v", m)
	if m.Merged == 0 {
		t.Fatalf("nothing merged: %v", m)
	}
	ok := 0
	for i, err := range errs {
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EIO) {
				t.Errorf("request %d: %v, want ENOSPC or EIO", i, err)
			}
			continue
		}
		ok++
		got := block.AlignedBuf(bs, block.DefaultMemAlign)
		if err := block.ReadAt(f, got, int64(i*bs)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[i*bs:(i+1)*bs]) {
			t.Errorf("request %d succeeded but its bytes read back wrong", i)
		}
	}
	if ok == 0 || ok == n {
		t.Fatalf("%d of %d writes succeeded: the device did not fill up mid-batch", ok, n)
	}
}
