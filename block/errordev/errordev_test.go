package errordev

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// ops is a fixed sequence used by the table tests: read write zero flush
// truncate write.
var opSeq = []Op{Read, Write, Zero, Flush, Truncate, Write}

func runSeq(d *Dev) []error {
	buf := make([]byte, 4096)
	errs := make([]error, 0, len(opSeq))
	for i, op := range opSeq {
		off := int64(i) * 4096
		var err error
		switch op {
		case Read:
			err = block.ReadAt(d, buf, off)
		case Write:
			err = block.WriteAt(d, buf, off)
		case Zero:
			err = d.WriteZeroes(off, 4096, 0)
		case Flush:
			err = d.Flush()
		case Truncate:
			err = d.Truncate(1 << 20)
		}
		errs = append(errs, err)
	}
	return errs
}

func TestInjectors(t *testing.T) {
	cases := []struct {
		name string
		inj  func() Injector
		fail []int // indices into opSeq that must fail
	}{
		{"none", func() Injector { return nil }, nil},
		{"OnIndex 0", func() Injector { return OnIndex(0, ErrInjectedEIO) }, []int{0}},
		{"OnIndex 3", func() Injector { return OnIndex(3, ErrInjectedEIO) }, []int{3}},
		{"OnIndex past end", func() Injector { return OnIndex(6, ErrInjectedEIO) }, nil},
		{"OnIndexSticky 4", func() Injector { return OnIndexSticky(4, ErrInjectedENOSPC) }, []int{4, 5}},
		{"OnOp write 1", func() Injector { return OnOp(Write, 1, ErrInjectedENOSPC) }, []int{5}},
		{"OnOp flush 0", func() Injector { return OnOp(Flush, 0, ErrInjectedEIO) }, []int{3}},
		{"Randomly 0", func() Injector { return Randomly(0, 1, ErrInjectedEIO) }, nil},
		{"Randomly 1", func() Injector { return Randomly(1, 1, ErrInjectedEIO) }, []int{0, 1, 2, 3, 4, 5}},
		{"Any", func() Injector {
			return Any(OnIndex(1, ErrInjectedEIO), OnIndex(1, ErrInjectedENOSPC), OnOp(Zero, 0, ErrInjectedEIO))
		}, []int{1, 2}},
		{"OnlyOps writes", func() Injector { return OnlyOps(OnIndex(1, ErrInjectedEIO), Write, Zero) }, []int{2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := New(memdev.New(memdev.Options{}), tc.inj(), Options{})
			errs := runSeq(d)
			want := map[int]bool{}
			for _, i := range tc.fail {
				want[i] = true
			}
			for i, err := range errs {
				if want[i] != (err != nil) {
					t.Errorf("op %d (%v): err %v, want failure %v", i, opSeq[i], err, want[i])
				}
				if err != nil && !errors.Is(err, ErrInjected) {
					t.Errorf("op %d: %v does not match ErrInjected", i, err)
				}
			}
			if d.Ops() != int64(len(opSeq)) || d.Injected() != int64(len(tc.fail)) {
				t.Errorf("Ops %d Injected %d", d.Ops(), d.Injected())
			}
		})
	}
}

func TestErrors_Is(t *testing.T) {
	cases := []struct {
		err   error
		errno syscall.Errno
	}{{ErrInjectedEIO, syscall.EIO}, {ErrInjectedENOSPC, syscall.ENOSPC}}
	for _, tc := range cases {
		d := New(memdev.New(memdev.Options{}), OnIndex(0, tc.err), Options{})
		err := d.Flush()
		var oe *block.OpError
		if !errors.Is(err, tc.errno) || !errors.Is(err, ErrInjected) || !errors.As(err, &oe) || oe.Op != "flush" {
			t.Errorf("%v: errors.Is(%v) false or not an OpError", tc.errno, err)
		}
		if errors.Is(err, syscall.EAGAIN) {
			t.Errorf("%v matches EAGAIN", err)
		}
	}
}

// TestDev_Sweep is the fault sweep pattern: rerun a workload with the fault
// at op 0, 1, 2, ... until none fires; every failure must be the injected one
// and the child must hold nothing from the failed op (E2).
func TestDev_Sweep(t *testing.T) {
	workload := func(d block.Device) error {
		data := bytes.Repeat([]byte{0xab}, 8192)
		if err := block.WriteAt(d, data, 0); err != nil {
			return err
		}
		if err := d.(block.ZeroWriter).ZeroThenWritev(65536, 65536, 0, 65536, [][]byte{data[:4096]}); err != nil {
			return err
		}
		if err := d.Flush(); err != nil {
			return err
		}
		got := make([]byte, 4096)
		return block.ReadAt(d, got, 65536)
	}
	for i := int64(0); ; i++ {
		mem := memdev.New(memdev.Options{})
		d := New(mem, OnIndex(i, ErrInjectedEIO), Options{})
		err := workload(d)
		if d.Injected() == 0 {
			if err != nil {
				t.Fatalf("clean run failed: %v", err)
			}
			if i != 5 { // write, zero+write, flush, read
				t.Fatalf("sweep ended after %d points, want 5", i)
			}
			return
		}
		if !errors.Is(err, ErrInjected) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("fault at op %d: err %v", i, err)
		}
		if i == 0 && len(mem.Bytes()) != 0 {
			t.Fatal("failed op reached the child")
		}
		if i == 2 && (mem.M.Zeroes.Load() != 1 || mem.M.BytesWritten.Load() != 8192) {
			t.Fatalf("fault on the write half: zeroes %d bytes written %d", mem.M.Zeroes.Load(), mem.M.BytesWritten.Load())
		}
	}
}

func TestDev_Latency(t *testing.T) {
	var mu sync.Mutex
	var seen []Op
	d := New(memdev.New(memdev.Options{}), nil, Options{LatencyFunc: func(op Op, off, n int64) time.Duration {
		mu.Lock()
		seen = append(seen, op)
		mu.Unlock()
		return time.Millisecond
	}})
	start := time.Now()
	runSeq(d)
	if el := time.Since(start); el < time.Duration(len(opSeq))*time.Millisecond {
		t.Fatalf("latency not applied: %v", el)
	}
	if len(seen) != len(opSeq) {
		t.Fatalf("latency func saw %v", seen)
	}
	d2 := New(memdev.New(memdev.Options{}), nil, Options{Latency: 2 * time.Millisecond})
	start = time.Now()
	d2.Flush()
	if time.Since(start) < 2*time.Millisecond {
		t.Fatal("fixed latency not applied")
	}
}

func TestDev_Concurrent(t *testing.T) {
	seed := testkit.Seed(t)
	inj := Randomly(0.1, seed, ErrInjectedEIO)
	d := New(memdev.New(memdev.Options{}), inj, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			buf := make([]byte, 512)
			for i := range 200 {
				err := block.WriteAt(d, buf, int64(g*200+i)*512)
				if err != nil && !errors.Is(err, ErrInjected) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if d.Ops() != 1600 || d.Injected() != inj.Fired() {
		t.Fatalf("Ops %d Injected %d Fired %d", d.Ops(), d.Injected(), inj.Fired())
	}
	if f := inj.Fired(); f < 80 || f > 250 {
		t.Fatalf("p=0.1 fired %d of 1600", f)
	}
}

func TestDev_PassThrough(t *testing.T) {
	mem := memdev.New(memdev.Options{Align: 512, Media: block.MediaSSD})
	d := New(mem, nil, Options{})
	if d.Caps() != mem.Caps() || d.Unwrap() != mem {
		t.Fatal("caps or child not passed through")
	}
	if err := d.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Size(); n != 4096 || d.Ops() != 1 {
		t.Fatalf("size %d ops %d", n, d.Ops())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestOp_String(t *testing.T) {
	for op, want := range map[Op]string{Read: "read", Write: "write", Zero: "zero", Flush: "flush", Truncate: "truncate", 9: "op(9)"} {
		if op.String() != want {
			t.Errorf("%d: %q", op, op.String())
		}
	}
	if Read.IsWrite() || !Flush.IsWrite() || Op(9).IsWrite() {
		t.Error("IsWrite")
	}
}
