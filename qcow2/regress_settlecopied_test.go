package qcow2

import (
	"math/rand"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Owed COPIED flags (a DeleteSnapshot whose fix failed once; then owed
// again before every Flush) set by Flushes that race with allocating
// writes, overwrites of clusters a snapshot shares, discards, zeroings
// and a queue's writes on other goroutines, with lazy refcounts and
// extended L2 too: no flag may be set on a shared cluster (the
// invariants build checks at flushes) and no write lost (qemu-img
// check, and the data against a model). A review probe of ed23dbf's
// settleCopiedLocked; it passed.
func TestSettleCopied_UnderLoad(t *testing.T) {
	t.Parallel()
	const per = 16 // clusters per worker
	const workers = 4
	for round := 0; round < 6; round++ {
		mem := memdev.New(memdev.Options{})
		cs := int64(4096)
		co := CreateOptions{ClusterSize: 4096, Size: 4 << 20}
		switch round % 3 {
		case 1:
			co.LazyRefcounts = true
		case 2:
			co.ExtendedL2, co.ClusterSize, cs = true, 16384, 16384
		}
		if err := CreateDevice(mem, co); err != nil {
			t.Fatal(err)
		}
		ed := errordev.New(mem, nil, errordev.Options{})
		im, err := OpenDevice(ed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 4<<20)
		w := pattern(int(workers*per*cs), 1)
		mustWrite(t, im, w, 0)
		copy(want, w)
		if _, err := im.CreateSnapshot("a"); err != nil {
			t.Fatal(err)
		}
		if _, err := im.CreateSnapshot("b"); err != nil {
			t.Fatal(err)
		}
		fired := failOnceIn(ed, errordev.Flush, -1, "fixCopiedLocked")
		if err := im.DeleteSnapshot("a"); err == nil || !fired.Load() {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		stop := make(chan struct{})
		for k := 0; k < workers; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(k + 10*round)))
				base := int64(k*per) * cs
				for i := 0; i < 300; i++ {
					c := base + int64(rng.Intn(per))*cs
					o := c + int64(rng.Intn(8))*512
					n := int64(512 * (1 + rng.Intn(8)))
					if o+n > c+cs {
						n = c + cs - o
					}
					var err error
					var p []byte
					switch rng.Intn(6) {
					case 0:
						err = im.Discard(c, cs)
						p = make([]byte, cs)
						o, n = c, cs
					case 1:
						err = im.WriteZeroes(o, n, block.MayUnmap)
						p = make([]byte, n)
					default:
						p = pattern(int(n), byte(rng.Intn(250)+2))
						_, err = im.WriteAt(p, o)
					}
					if err != nil {
						t.Errorf("worker %d: %v", k, err)
						return
					}
					mu.Lock()
					copy(want[o:], p)
					mu.Unlock()
				}
			}(k)
		}
		// A queue's owner writes its own region meanwhile (Q16).
		q, err := im.NewQueue(16)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(99 + round)))
			base := int64(workers * per * cs)
			out := make([]*block.Req, 16)
			for b := 0; b < 60; b++ {
				var reqs []*block.Req
				seen := map[int64]bool{}
				for len(reqs) < 8 {
					c := base + int64(rng.Intn(2*per))*cs
					if seen[c] {
						continue
					}
					seen[c] = true
					o := c + int64(rng.Intn(8))*512
					reqs = append(reqs, &block.Req{Op: block.OpWrite, Off: o, Buf: pattern(512, byte(rng.Intn(250)+2))})
				}
				if err := q.Submit(reqs...); err != nil {
					t.Errorf("queue submit: %v", err)
					return
				}
				got := 0
				for got < len(reqs) {
					n, err := q.Wait(out, 1)
					if err != nil {
						t.Errorf("queue wait: %v", err)
						return
					}
					for _, r := range out[:n] {
						if r.Err != nil {
							t.Errorf("queued write at %d: %v", r.Off, r.Err)
						}
					}
					got += n
				}
				mu.Lock()
				for _, r := range reqs {
					copy(want[r.Off:], r.Buf)
				}
				mu.Unlock()
			}
		}()
		var fg sync.WaitGroup
		fg.Add(1)
		flushes, settled := 0, 0
		go func() {
			defer fg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				im.mu.Lock()
				im.copiedOwed = true // as if every fix had failed
				im.mu.Unlock()
				if err := im.Flush(); err != nil {
					t.Errorf("flush: %v", err)
					return
				}
				flushes++
				im.mu.Lock()
				if !im.copiedOwed {
					settled++
				}
				im.mu.Unlock()
			}
		}()
		wg.Wait()
		close(stop)
		fg.Wait()
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d flushes under load, %d settled the flags, owed after: %v", round, flushes, settled, im.copiedOwed)
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(testkit.Dir(t), "after.qcow2")
		if err := mem.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheckNoCorruption(t, p)
		im2, err := OpenDevice(mem.Clone(), Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := testkit.ReadAll(t, im2); testkit.FirstDiff(got, want) >= 0 {
			t.Fatalf("round %d: data differs at %d", round, testkit.FirstDiff(got, want))
		}
		r, err := im2.Check(CheckOptions{})
		if err != nil || r.Corruptions != 0 {
			t.Fatalf("round %d: check %v %v", round, err, head(r.Messages, 6))
		}
		im2.Close()
	}
}
