package filter_test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// countDev counts the calls that reach a child, so a test can prove a
// refused request touched nothing (FL2).
type countDev struct {
	block.Device
	calls atomic.Int64
}

func (c *countDev) Readv(off int64, b [][]byte) error { c.calls.Add(1); return c.Device.Readv(off, b) }
func (c *countDev) Writev(off int64, b [][]byte) error {
	c.calls.Add(1)
	return c.Device.Writev(off, b)
}
func (c *countDev) WriteZeroes(off, n int64, f block.Flags) error {
	c.calls.Add(1)
	return c.Device.WriteZeroes(off, n, f)
}
func (c *countDev) Flush() error { c.calls.Add(1); return c.Device.Flush() }

// allocAll is a top device that claims everything is allocated (enough
// for copy-on-read's flag tests).
type allocAll struct{ block.Device }

func (allocAll) Allocated(off, n int64) (bool, int64, error) { return true, n, nil }

// memAlloc is a memdev top with a byte-exact allocation map, for
// copy-on-read without qcow2.
type memAlloc struct {
	*memdev.Dev
	mu    sync.Mutex
	alloc map[int64]bool
}

func newMemAlloc(size int64) *memAlloc {
	d := memdev.New(memdev.Options{})
	d.Truncate(size)
	return &memAlloc{Dev: d, alloc: map[int64]bool{}}
}

func (m *memAlloc) mark(off, n int64) {
	m.mu.Lock()
	for i := off; i < off+n; i++ {
		m.alloc[i] = true
	}
	m.mu.Unlock()
}

func (m *memAlloc) Writev(off int64, b [][]byte) error {
	m.mark(off, block.VecLen(b))
	return m.Dev.Writev(off, b)
}

func (m *memAlloc) WriteZeroes(off, n int64, f block.Flags) error {
	m.mark(off, n)
	return m.Dev.WriteZeroes(off, n, f)
}

func (m *memAlloc) Allocated(off, n int64) (bool, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.alloc[off]
	l := int64(1)
	for l < n && m.alloc[off+l] == a {
		l++
	}
	return a, l, nil
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

func createFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}
