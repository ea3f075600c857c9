package qring_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Example_locking shows the image locks (block B8) that both openers take
// as QEMU takes them: while one writer has the image open, a second
// writer, a plain reader and a Create over the file are refused with an
// error matching block.ErrLocked; a force-share reader (qemu-img -U) may
// still look. docs/library.md explains the rules.
func Example_locking() {
	dir, err := os.MkdirTemp("", "qring-embed-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 64 << 20}); err != nil {
		log.Fatal(err)
	}
	w, err := qcow2.Open(path, qcow2.Options{}) // the default opener, block.OSFile
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	// refused reports whether an open was refused for a lock, closing
	// the image if it was not.
	refused := func(im *qcow2.Image, err error) bool {
		if err == nil {
			im.Close()
		}
		return errors.Is(err, block.ErrLocked)
	}
	_, err = qcow2.Open(path, qcow2.Options{})
	var lockErr *qcow2.LockError // the path and QEMU's wording
	fmt.Println("second writer refused:", errors.Is(err, block.ErrLocked), errors.As(err, &lockErr))
	fmt.Println("reader beside a writer refused:", refused(qcow2.Open(path, qcow2.Options{ReadOnly: true})))
	fmt.Println("second writer on io_uring refused:",
		refused(qcow2.Open(path, qcow2.Options{Opener: uring.Opener(uring.Options{})})))
	err = qcow2.Create(path, qcow2.CreateOptions{Size: 1 << 20})
	fmt.Println("Create over the open image refused:", errors.Is(err, block.ErrLocked))

	r, err := qcow2.Open(path, qcow2.Options{ReadOnly: true, ForceShare: true})
	fmt.Println("force-share reader:", err)
	if err == nil {
		r.Close()
	}
	_, err = qcow2.Open(path, qcow2.Options{ForceShare: true})
	fmt.Println("force-share writer refused:", errors.Is(err, qcow2.ErrForceShareWritable))
	// Output:
	// second writer refused: true true
	// reader beside a writer refused: true
	// second writer on io_uring refused: true
	// Create over the open image refused: true
	// force-share reader: <nil>
	// force-share writer refused: true
}

// Example_flushAndReopen writes, flushes (block B6: durable once Flush
// returns), closes (Close flushes too) and reopens the image read-only,
// then shows the range rules: ReadAt across the end of the disk reads
// what lies inside and returns io.EOF, WriteAt past the end writes
// nothing and fails with block.ErrRange (the disk never grows by
// itself), and writes to a read-only image fail with block.ErrReadOnly.
func Example_flushAndReopen() {
	dir, err := os.MkdirTemp("", "qring-embed-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")
	const size = 1 << 20
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: size}); err != nil {
		log.Fatal(err)
	}
	w, err := qcow2.Open(path, qcow2.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("last bytes"), size-10); err != nil {
		log.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	// After Flush the write is on the media: a force-share reader, which
	// reads the file as another process would, sees it.
	peek, err := qcow2.Open(path, qcow2.Options{ReadOnly: true, ForceShare: true})
	if err != nil {
		log.Fatal(err)
	}
	got := make([]byte, 10)
	if _, err := peek.ReadAt(got, size-10); err != nil {
		log.Fatal(err)
	}
	peek.Close()
	fmt.Printf("flushed, seen by another reader: %q\n", got)
	_, err = w.WriteAt([]byte("0123"), size-2)
	fmt.Println("write past the end:", errors.Is(err, block.ErrRange))
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	ro, err := qcow2.Open(path, qcow2.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer ro.Close()
	buf := make([]byte, 16)
	n, err := ro.ReadAt(buf, size-10)
	fmt.Printf("ReadAt across the end: %d bytes %q, err %v\n", n, buf[:n], err)
	_, err = ro.WriteAt([]byte("x"), 0)
	fmt.Println("write to a read-only image:", errors.Is(err, block.ErrReadOnly))
	_, err = w.WriteAt([]byte("x"), 0)
	fmt.Println("write after Close:", errors.Is(err, os.ErrClosed))
	// Output:
	// flushed, seen by another reader: "last bytes"
	// write past the end: true
	// ReadAt across the end: 10 bytes "last bytes", err EOF
	// write to a read-only image: true
	// write after Close: true
}

// Example_queueRules is a queue round trip with the queue's rules: a
// depth from 1 to block.MaxQueueDepth, at most depth requests in flight
// (ErrQueueFull), one owner goroutine (block A1), a flush that covers the
// writes reaped before it was submitted (A2), and an image that refuses
// to close while a queue on it is open (qcow2.ErrQueueOpen).
func Example_queueRules() {
	dir, err := os.MkdirTemp("", "qring-embed-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 1 << 30}); err != nil {
		log.Fatal(err)
	}
	img, err := qcow2.Open(path, qcow2.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()

	_, err = img.NewQueue(block.MaxQueueDepth + 1)
	fmt.Println("too deep:", errors.Is(err, block.ErrRange))
	q, err := img.NewQueue(4)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Close with a queue open:", errors.Is(img.Close(), qcow2.ErrQueueOpen))

	// run submits reqs and waits for all of them.
	done := make([]*block.Req, 4)
	run := func(reqs ...*block.Req) {
		if err := q.Submit(reqs...); err != nil {
			log.Fatal(err)
		}
		for n := 0; n < len(reqs); {
			k, err := q.Wait(done[n:], len(reqs)-n)
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
	five := make([]*block.Req, 5)
	for i := range five {
		five[i] = &block.Req{Op: block.OpFlush}
	}
	fmt.Println("five on a queue of four:", errors.Is(q.Submit(five...), block.ErrQueueFull))

	a := &block.Req{Op: block.OpWrite, Off: 0, Buf: []byte("queued ")}
	b := &block.Req{Op: block.OpWrite, Off: 7, Buf: []byte("writes")}
	run(a, b)                          // no order between requests in flight together
	run(&block.Req{Op: block.OpFlush}) // durable: both were reaped before it
	rd := &block.Req{Op: block.OpRead, Off: 0, Buf: make([]byte, 13)}
	run(rd)
	fmt.Printf("read back: %q\n", rd.Buf)

	if err := q.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("Close after the queue's:", img.Close())
	// Output:
	// too deep: true
	// Close with a queue open: true
	// five on a queue of four: true
	// read back: "queued writes"
	// Close after the queue's: <nil>
}
