package qring_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Example_queue writes 64 blocks and reads them back through a queue:
// one goroutine puts many requests in with one call and takes their
// completions by the batch, with no goroutine per request. Requests
// into allocated clusters (here the reads) go to the file's own io_uring
// translated; writes inside one cluster that need a new one (here the
// first writes) go to the queue's allocator, which plans them by the
// batch and writes them through a ring of its own; anything else runs
// the engine's synchronous path on a goroutine. All complete the same way.
func Example_queue() {
	dir, err := os.MkdirTemp("", "qring-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 1 << 30}); err != nil {
		log.Fatal(err)
	}
	img, err := qcow2.Open(path, qcow2.Options{Opener: qcow2.Opener(uring.Opener(uring.Options{Direct: true}))})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()

	q, err := img.NewQueue(64) // block.Queue; close it before the image
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	reqs := make([]*block.Req, 64)
	for i := range reqs {
		buf := block.AlignedBuf(4096, block.DefaultMemAlign)
		buf[0] = byte(i)
		reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(i) * 4096, Buf: buf}
	}
	done := make([]*block.Req, 64)
	for _, op := range []block.Op{block.OpWrite, block.OpRead} {
		for _, r := range reqs {
			r.Op = op
			if op == block.OpRead {
				r.Buf[0] = 0xff
			}
		}
		if err := q.Submit(reqs...); err != nil {
			log.Fatal(err)
		}
		for n := 0; n < len(reqs); {
			k, err := q.Wait(done[n:], len(reqs)-n) // at least that many, usually all
			if err != nil {
				log.Fatal(err)
			}
			for _, r := range done[n : n+k] {
				if r.Err != nil {
					log.Fatal(r.Err)
				}
			}
			n += k
		}
	}
	fmt.Println(reqs[0].Buf[0], reqs[63].Buf[0])
	// Output: 0 63
}
