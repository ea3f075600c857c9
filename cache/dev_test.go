package cache

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// recDev wraps a memdev, counting reads, recording writes and flushes in
// order, and optionally failing or blocking them.
type recDev struct {
	*memdev.Dev
	reads atomic.Int64

	mu  sync.Mutex
	log []string

	// Hooks, set before use; nil means none.
	beforeRead  func(off int64)
	beforeWrite func(off int64) error
	beforeFlush func() error
	onWriteData func(off int64, bufs [][]byte)
}

func newRecDev() *recDev { return &recDev{Dev: memdev.New(memdev.Options{})} }

func (d *recDev) record(s string) {
	d.mu.Lock()
	d.log = append(d.log, s)
	d.mu.Unlock()
}

func (d *recDev) ops() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.log...)
}

func (d *recDev) reset() {
	d.mu.Lock()
	d.log = nil
	d.mu.Unlock()
}

// expectOps clears d's op log, runs op, and fails t unless op succeeds and
// d saw exactly want; what names the step in the failure.
func (d *recDev) expectOps(t *testing.T, what string, op func() error, want ...string) {
	t.Helper()
	d.reset()
	if err := op(); err != nil {
		t.Fatal(err)
	}
	if got := d.ops(); !slices.Equal(got, want) {
		t.Fatalf("%s: ops = %q, want %q", what, got, want)
	}
}

func (d *recDev) Readv(off int64, bufs [][]byte) error {
	d.reads.Add(1)
	if d.beforeRead != nil {
		d.beforeRead(off)
	}
	return d.Dev.Readv(off, bufs)
}

func (d *recDev) Writev(off int64, bufs [][]byte) error {
	if d.beforeWrite != nil {
		if err := d.beforeWrite(off); err != nil {
			return err
		}
	}
	if d.onWriteData != nil {
		d.onWriteData(off, bufs)
	}
	// Record per table so tests need not care how runs were batched.
	o := off
	for _, b := range bufs {
		d.record(fmt.Sprintf("write 0x%x", o))
		o += int64(len(b))
	}
	return d.Dev.Writev(off, bufs)
}

func (d *recDev) Flush() error {
	if d.beforeFlush != nil {
		if err := d.beforeFlush(); err != nil {
			return err
		}
	}
	d.record("flush")
	return d.Dev.Flush()
}

var _ block.Device = (*recDev)(nil)
