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

// Example creates a 4 GiB qcow2 image, opens it on io_uring with O_DIRECT,
// writes at 1 MiB, flushes and reads the data back.
func Example() {
	dir, err := os.MkdirTemp("", "qring-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")

	// The engine never imports the ring: the caller picks the backend.
	// uring's files, as the default opener's, take QEMU's image locks,
	// so Create refuses an image in use.
	opener := func(p string, ro bool) (block.Device, error) {
		return uring.Open(p, uring.Options{Direct: true, ReadOnly: ro})
	}
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 4 << 30, Opener: opener}); err != nil {
		log.Fatal(err)
	}
	img, err := qcow2.Open(path, qcow2.Options{Opener: opener})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()

	// Any length and alignment: O_DIRECT is the engine's business.
	if _, err := img.WriteAt([]byte("hello, qcow2"), 1<<20); err != nil {
		log.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		log.Fatal(err)
	}
	got := make([]byte, 12)
	if _, err := img.ReadAt(got, 1<<20); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", got)
	// Output: hello, qcow2
}
