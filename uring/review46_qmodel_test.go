//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// TestReview46_QueueModel (U10, U13, U15, block A2): batches of
// non-overlapping queued writes, zeroings, reads and flushes at aligned,
// misaligned and past-the-end places, on a vector queue (merging) of
// files on ext4, tmpfs and XFS with 8 KiB sectors and of a block device,
// against a byte model: each request means what the File's method
// means, so after each batch the size and every byte must match. On the
// block device a request crossing its end fails with ENOSPC having
// written nothing.
func TestReview46_QueueModel(t *testing.T) {
	batches := 40
	if testing.Short() {
		batches = 20
	}
	const devSize = 256 << 10
	targets := []struct {
		name string
		open func(t *testing.T, o Options) *File
	}{
		{"tempdir", func(t *testing.T, o Options) *File { return openIn(t, t.TempDir(), o) }},
		{"tmpfs", func(t *testing.T, o Options) *File { return openIn(t, smallTmpfs(t, 64<<20), o) }},
		{"xfs-8k", func(t *testing.T, o Options) *File { return openIn(t, xfsLargeSector(t, 300<<20, 8192), o) }},
		{"blockdev", func(t *testing.T, o Options) *File {
			f, err := Open(looptest.LoopDevice(t, devSize, 4<<20), o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
	}
	for _, tg := range targets {
		for _, c := range configs()[:2] { // ring, ring-direct
			t.Run(tg.name+"/"+c.name, func(t *testing.T) {
				f := tg.open(t, c.opt)
				var model []byte
				fixed := f.Caps().Fixed
				if fixed {
					model = readAll(t, f, 0, devSize)
				}
				q, err := f.NewVecQueue(16)
				if err != nil {
					t.Fatal(err)
				}
				defer q.Close()
				r := rand.New(rand.NewPCG(47, uint64(len(t.Name()))))
				const span = 320 << 10 // past the block device's end
				out := make([]*block.Req, 16)
				for b := range batches {
					// Cut [0, span) into pieces; take a few, in a
					// random order, as one batch.
					var reqs []*block.Req
					for off := r.Int64N(8192); off < span && len(reqs) < 16; {
						n := 1 + r.Int64N(32<<10)
						if r.IntN(2) == 0 {
							off, n = alignUp(off, 8192), alignUp(n, 8192)
						}
						if r.IntN(2) == 0 {
							req := &block.Req{Off: off}
							switch k := r.IntN(8); {
							case k < 4:
								req.Op, req.Buf = block.OpWrite, randBytes(r, n, r.IntN(4) == 0)
							case k < 5:
								req.Op, req.Len = block.OpWriteZeroes, n
								req.Flags = []block.Flags{0, block.MayUnmap}[r.IntN(2)]
							case k < 7:
								req.Op, req.Buf = block.OpRead, make([]byte, n)
							default:
								req.Op = block.OpFlush
							}
							reqs = append(reqs, req)
						}
						off += n + r.Int64N(3)*4096
					}
					r.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
					if err := q.Submit(reqs...); err != nil {
						t.Fatal(err)
					}
					for got := 0; got < len(reqs); {
						k, err := q.Wait(out, len(reqs)-got)
						if err != nil {
							t.Fatal(err)
						}
						got += k
					}
					// Apply the batch to the model (no overlaps: any
					// order), reads checked against the model before it.
					before := slices.Clone(model)
					for _, req := range reqs {
						n := int64(len(req.Buf))
						if req.Op == block.OpWriteZeroes {
							n = req.Len
						}
						past := fixed && req.Off+n > devSize
						switch req.Op {
						case block.OpRead:
							if req.Err != nil {
								t.Fatalf("batch %d: read [%d,+%d): %v", b, req.Off, n, req.Err)
							}
							want := make([]byte, n)
							if req.Off < int64(len(before)) {
								copy(want, before[req.Off:])
							}
							if !bytes.Equal(req.Buf, want) {
								t.Fatalf("batch %d: read [%d,+%d) wrong", b, req.Off, n)
							}
						case block.OpFlush:
							if req.Err != nil {
								t.Fatalf("batch %d: flush: %v", b, req.Err)
							}
						default:
							if past {
								if !errors.Is(req.Err, unix.ENOSPC) {
									t.Fatalf("batch %d: %v [%d,+%d) past the device's end: %v, want ENOSPC", b, req.Op, req.Off, n, req.Err)
								}
								continue
							}
							if req.Err != nil {
								t.Fatalf("batch %d: %v [%d,+%d): %v", b, req.Op, req.Off, n, req.Err)
							}
							if end := req.Off + n; end > int64(len(model)) {
								model = append(model, make([]byte, end-int64(len(model)))...)
							}
							if req.Op == block.OpWrite {
								copy(model[req.Off:], req.Buf)
							} else {
								clear(model[req.Off : req.Off+n])
							}
						}
					}
					if sz, err := f.Size(); err != nil || sz != int64(len(model)) {
						t.Fatalf("batch %d: Size %d, %v; want %d", b, sz, err, len(model))
					}
					expectFile(t, f, model, fmt.Sprintf("batch %d", b))
				}
				t.Logf("%v", f.Metrics())
			})
		}
	}
}

// openIn creates and opens a File named img in dir, closed at t's end.
func openIn(t *testing.T, dir string, o Options) *File {
	t.Helper()
	o.Create = true
	f, err := Open(filepath.Join(dir, "img"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
