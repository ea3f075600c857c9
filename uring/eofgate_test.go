//go:build linux

package uring

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"golang.org/x/sys/unix"
)

// gateCheck is a backend that counts the writes and size-changing
// fallocates reaching past the file's size while eofGate is free: an
// extending fallocate could then run beside them (U3).
type gateCheck struct {
	backend
	f   *File
	bad atomic.Int32
}

func (c *gateCheck) check(end int64) {
	var st unix.Stat_t
	if err := unix.Fstat(c.f.fd, &st); err != nil {
		panic(err)
	}
	if end > st.Size && c.f.eofGate.TryLock() {
		c.f.eofGate.Unlock()
		c.bad.Add(1)
	}
}

func (c *gateCheck) rw(write bool, off int64, bufs [][]byte) (int, error) {
	if write {
		c.check(off + block.VecLen(bufs))
	}
	return c.backend.rw(write, off, bufs)
}

func (c *gateCheck) fallocate(mode uint32, off, n int64) error {
	if mode&unix.FALLOC_FL_KEEP_SIZE == 0 {
		c.check(off + n)
	}
	return c.backend.fallocate(mode, off, n)
}

// linkCheck is the same for the linked ZeroThenWritev (U4).
type linkCheck struct {
	linker
	c *gateCheck
}

func (l linkCheck) linked(mode uint32, zoff, zn, woff int64, bufs [][]byte) (int32, int32, error) {
	l.c.check(max(zoff+zn, woff+block.VecLen(bufs)))
	return l.linker.linked(mode, zoff, zn, woff, bufs)
}

// TestFile_TruncateBesideWriteKeepsGate (U3, U1): a request on a Direct
// file that ends inside the known EOF takes no EOF gate; a Truncate
// below its end, between that look and the request reaching the kernel,
// made it grow the file without the gate, beside which an extending
// fallocate could run (the XFS race of QEMU 292d06b925). The Truncate
// runs in that window (testEOFLooked); the request must hold the gate
// when it grows the file. Buffered files keep the window: there the
// kernel serialises a write and a fallocate on the inode lock (U3).
func TestFile_TruncateBesideWriteKeepsGate(t *testing.T) {
	data := pattern(11, 4096)
	cases := []struct {
		name string
		do   func(f *File) error
		want []byte // at 8 KiB
	}{
		{"write", func(f *File) error { return f.Writev(8192, [][]byte{data}) }, data},
		{"rmw", func(f *File) error { return f.Writev(8192, [][]byte{data[:1000]}) }, data[:1000]},
		{"zero-allocate", func(f *File) error { return f.WriteZeroes(8192, 4096, block.Allocate) }, make([]byte, 4096)},
		{"zero", func(f *File) error { return f.WriteZeroes(8192, 4096, 0) }, make([]byte, 4096)},
		{"zero-then-write", func(f *File) error {
			return f.ZeroThenWritev(8192, 4096, block.Allocate, 8192, [][]byte{data})
		}, data},
	}
	for _, c := range configs() {
		if !c.opt.Direct {
			continue
		}
		for _, k := range cases {
			t.Run(c.name+"/"+k.name, func(t *testing.T) {
				f := openTemp(t, c.opt)
				if err := f.Writev(0, [][]byte{pattern(12, 16384)}); err != nil {
					t.Fatal(err)
				}
				if err := f.WriteZeroes(16384, 4096, block.Allocate); err != nil {
					t.Skipf("no Allocate zeroing here: %v", err) // also arms the linked path (U4)
				}
				chk := &gateCheck{backend: f.io, f: f}
				f.io = chk
				if f.link != nil {
					f.link = linkCheck{linker: f.link, c: chk}
				}
				f.testEOFLooked = func() {
					f.testEOFLooked = nil
					if err := f.Truncate(4096); err != nil {
						t.Error(err)
					}
				}
				if err := k.do(f); err != nil {
					t.Fatal(err)
				}
				if f.testEOFLooked != nil {
					t.Fatal("the request never looked at eof without a gate")
				}
				if n := chk.bad.Load(); n != 0 {
					t.Fatalf("%d requests grew the file past a Truncate without the EOF gate", n)
				}
				got := make([]byte, len(k.want))
				if err := f.Readv(8192, [][]byte{got}); err != nil {
					t.Fatal(err)
				}
				testkit.MustEqual(t, got, k.want, "at 8 KiB")
				if size, err := f.Size(); err != nil || f.eof.Load() > size {
					t.Fatalf("known EOF %d, size %d %v (U3: a lower bound)", f.eof.Load(), size, err)
				}
			})
		}
	}
}

// TestQueue_TruncateBesideWriteKeepsGate is the same for a queue's write
// (U10): it holds the gate from submission until it is reaped when it
// grows the file.
func TestQueue_TruncateBesideWriteKeepsGate(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring, Direct: true})
	if err := f.Writev(0, [][]byte{pattern(13, 16384)}); err != nil {
		t.Fatal(err)
	}
	q, err := f.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	f.testEOFLooked = func() {
		f.testEOFLooked = nil
		if err := f.Truncate(4096); err != nil {
			t.Error(err)
		}
	}
	w := &block.Req{Op: block.OpWrite, Off: 8192, Buf: pattern(14, 4096)}
	if err := q.Submit(w); err != nil {
		t.Fatal(err)
	}
	if f.testEOFLooked != nil {
		t.Fatal("the write never looked at eof without a gate")
	}
	free := f.eofGate.TryLock()
	if free {
		f.eofGate.Unlock()
	}
	out := make([]*block.Req, 1)
	if k, err := q.Wait(out, 1); k != 1 || err != nil || w.Err != nil {
		t.Fatalf("Wait: %d %v %v", k, err, w.Err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if free {
		t.Fatal("a queued write growing the file past a Truncate held no EOF gate")
	}
	if got := readAll(t, f, 8192, 4096); !bytes.Equal(got, w.Buf) {
		t.Fatal("the write did not land")
	}
}
