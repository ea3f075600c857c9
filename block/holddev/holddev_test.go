package holddev_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/memdev"
)

func TestConformance(t *testing.T) {
	blocktest.Run(t, func(t *testing.T) block.Device {
		return holddev.New(memdev.New(memdev.Options{}), holddev.Options{})
	}, blocktest.Config{Truncate: blocktest.TruncateAny})
}

func write(d block.Device, off int64, b byte) chan error {
	ch := make(chan error, 1)
	go func() { ch <- d.Writev(off, [][]byte{bytes.Repeat([]byte{b}, 512)}) }()
	return ch
}

func pending(ch chan error) bool {
	select {
	case err := <-ch:
		ch <- err
		return false
	case <-time.After(50 * time.Millisecond):
		return true
	}
}

// TestHold_Before: the Nth matching op waits before the child sees it;
// other ops go by; Release lets it through.
func TestHold_Before(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	d := holddev.New(mem, holddev.Options{})
	h := d.Hold(holddev.Match{Kinds: holddev.Write, Off: 4096, End: 8192, Nth: 2})
	if err := <-write(d, 4096, 1); err != nil { // first match: not held
		t.Fatal(err)
	}
	if err := <-write(d, 0, 2); err != nil { // outside the range
		t.Fatal(err)
	}
	ch := write(d, 4608, 3)
	select {
	case <-h.Reached():
	case <-time.After(5 * time.Second):
		t.Fatal("the second matching write was not caught")
	}
	if !pending(ch) {
		t.Fatal("held write returned")
	}
	b := make([]byte, 512)
	mem.Readv(4608, [][]byte{b})
	if b[0] != 0 {
		t.Fatal("held write reached the child before Release")
	}
	if op := h.Op(); op.Kind != holddev.Write || op.Off != 4608 || op.Len != 512 {
		t.Fatalf("caught %v", op)
	}
	h.Release()
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	mem.Readv(4608, [][]byte{b})
	if b[0] != 3 {
		t.Fatal("released write lost")
	}
	if c := d.Counts(); c.Writes != 3 || c.Held != 1 {
		t.Fatalf("counts %+v", c)
	}
}

// TestHold_After: the child has done the op, the caller does not know.
func TestHold_After(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	d := holddev.New(mem, holddev.Options{})
	h := d.Hold(holddev.Match{Kinds: holddev.Write, After: true})
	ch := write(d, 0, 7)
	<-h.Reached()
	b := make([]byte, 512)
	mem.Readv(0, [][]byte{b})
	if b[0] != 7 {
		t.Fatal("with After the child must have the write")
	}
	if !pending(ch) {
		t.Fatal("caller heard back before Release")
	}
	d.ReleaseAll()
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
}

// TestHold_KindsAndFn: a flush hold ignores writes; Fn narrows.
func TestHold_KindsAndFn(t *testing.T) {
	d := holddev.New(memdev.New(memdev.Options{}), holddev.Options{})
	h := d.Hold(holddev.Match{Kinds: holddev.Flush, Fn: func(o holddev.Op) bool { return o.Seq > 2 }})
	if err := <-write(d, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil { // Seq 2: Fn says no
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- d.Flush() }()
	<-h.Reached()
	if !pending(ch) {
		t.Fatal("held flush returned")
	}
	h.Release()
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
}

// TestKindNamesAndCounts: every kind has its name, a set or an unknown
// bit is printed as a number, and each kind is counted on its own.
func TestKindNamesAndCounts(t *testing.T) {
	for k, want := range map[holddev.Kind]string{
		holddev.Read: "read", holddev.Write: "write", holddev.Zero: "zero", holddev.ZeroWrite: "zero+write", holddev.Flush: "flush", holddev.Truncate: "truncate",
		0: "kind(0x0)", holddev.Read | holddev.Write: "kind(0x3)", 1 << 7: "kind(0x80)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%#x).String() = %q, want %q", uint8(k), got, want)
		}
	}
	d := holddev.New(memdev.New(memdev.Options{}), holddev.Options{})
	buf := make([]byte, 512)
	for range 2 {
		if err := block.WriteAt(d, buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := block.ReadAt(d, buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := d.Counts(), (holddev.Counts{Reads: 1, Writes: 2, Flushes: 1}); got != want {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
}
