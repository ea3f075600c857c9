// Package blocktest is the block.Device conformance kit: Run checks a
// device against the invariants of block/doc.go (B1..B7) and the method
// contracts of block.Device, one subtest per case. Every device in the
// repository runs it (memdev, OSFile, the io_uring File in every mode,
// latdev, errordev, tracedev, each filter, *qcow2.Image).
//
// What a device legitimately lacks is said by Config (a fixed size, no
// shrinking, no read-only variant, ...) or read from Caps() (no Allocate,
// no Serialising/NoWait, an alignment); the case then checks the
// documented refusal instead (ErrNotSupported with nothing written, the
// device's own error for a fixed size, ...).
//
// Cases (subtest names, usable as Config.Skip keys):
//
//	caps              Caps() is stable and well formed; a growable device starts empty
//	flags             a WriteZeroes flag outside Caps() is ErrNotSupported, with no side effects
//	ranges            negative and overflowing ranges are ErrRange; empty requests change nothing
//	vectored          vectors with empty, odd-sized and more than IOV_MAX buffers round-trip
//	ownership         the device keeps no reference to a written buffer
//	B1_concurrent     concurrent overlapping writes are not torn below Caps().Align; disjoint ones all land
//	B1_no_wait        with a write held in flight (Stall), disjoint reads, writes and zeroing complete
//	B2_read_past_eof  reads past the end are zero-filled
//	B3_allocate       Allocate zeroes, or is ErrNotSupported with nothing written; misaligned (Align, ZeroAlign) beside data is ErrNotSupported
//	B4_zeroes         WriteZeroes without Allocate zeroes any range, growing a growable device
//	B5_serialising    Serialising|NoWait is ErrBusy against an in-flight overlapping request (or ErrNotSupported when Caps() lacks it)
//	B6_flush          Flush succeeds; with Crash, what completed before it survives a power cut
//	B7_closed         after Close every method returns os.ErrClosed
//	misaligned        unaligned offsets, lengths and buffer addresses round-trip
//	zero_then_writev  block.ZeroWriter, if implemented: zero then write, or nothing on refusal
//	truncate          grow and shrink as Config.Truncate says, refused otherwise
//	readonly          the read-only variant refuses every write and reads the data
package blocktest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// MinFixedSize is the smallest size a fixed-size device under test may
// have: the cases use the first few MiB.
const MinFixedSize = 4 << 20

// TruncateMode says what Truncate supports.
type TruncateMode int

const (
	// TruncateAny: grow and shrink.
	TruncateAny TruncateMode = iota
	// TruncateGrow: grow only; shrinking fails with TruncateErr.
	TruncateGrow
	// TruncateNone: every Truncate fails with TruncateErr.
	TruncateNone
)

// Config says what the device under test supports beyond what Caps()
// reports.
type Config struct {
	// FixedSize: the device has a fixed size (Size() at open, at least
	// MinFixedSize); writes and zeroing past it fail with PastEndErr
	// (default block.ErrRange) having written nothing. Without it, open
	// must return an empty device that grows with writes past its end.
	FixedSize  bool
	PastEndErr error
	// Truncate is what Truncate supports; refusals match TruncateErr
	// (default block.ErrNotSupported) and change nothing.
	Truncate    TruncateMode
	TruncateErr error
	// AllocAlign is the alignment Allocate zeroing needs when larger than
	// Caps().Align and Caps().ZeroAlign (qcow2: the cluster size), for
	// devices that do not report it in Caps; a misaligned Allocate
	// request is ErrNotSupported.
	AllocAlign int64
	// Stall, if set, is wired into the device's storage (e.g.
	// memdev.Options.OnWrite = Stall.Hook) so cases can hold a write in
	// flight inside the device: B1_no_wait and B5_serialising need it.
	Stall *Stall
	// Crash, if set, returns a device holding what d's storage would hold
	// after a power cut now, with every write not covered by a Flush
	// lost (memdev.CrashClone with keep 0), for B6.
	Crash func(t *testing.T, d block.Device) block.Device
	// ReadOnly, if set, opens a read-only view of d's storage (d stays
	// open); writes to it fail with ReadOnlyErr (default
	// block.ErrReadOnly).
	ReadOnly    func(t *testing.T, d block.Device) block.Device
	ReadOnlyErr error
	// Skip names cases that must be skipped, with the reason (a known
	// failure that cannot be fixed in the device's package).
	Skip map[string]string
	// Only, if set, runs just the named cases.
	Only []string
}

// Run runs every conformance case against a fresh device from open. open
// must return a new device each time (and may register its Close with
// t.Cleanup, ignoring os.ErrClosed: B7_closed closes it itself).
func Run(t *testing.T, open func(t *testing.T) block.Device, c Config) {
	if c.PastEndErr == nil {
		c.PastEndErr = block.ErrRange
	}
	if c.TruncateErr == nil {
		c.TruncateErr = block.ErrNotSupported
	}
	if c.ReadOnlyErr == nil {
		c.ReadOnlyErr = block.ErrReadOnly
	}
	cases := []struct {
		name string
		fn   func(k *kit)
	}{
		{"caps", (*kit).capsCase},
		{"flags", (*kit).flags},
		{"ranges", (*kit).ranges},
		{"vectored", (*kit).vectored},
		{"ownership", (*kit).ownership},
		{"B1_concurrent", (*kit).b1Concurrent},
		{"B1_no_wait", (*kit).b1NoWait},
		{"B2_read_past_eof", (*kit).b2},
		{"B3_allocate", (*kit).b3},
		{"B4_zeroes", (*kit).b4},
		{"B5_serialising", (*kit).b5},
		{"B6_flush", (*kit).b6},
		{"B7_closed", (*kit).b7},
		{"misaligned", (*kit).misaligned},
		{"zero_then_writev", (*kit).zeroThenWritev},
		{"truncate", (*kit).truncate},
		{"readonly", (*kit).readonly},
	}
	for _, tc := range cases {
		if c.Only != nil && !slices.Contains(c.Only, tc.name) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := c.Skip[tc.name]; ok {
				t.Skip(why)
			}
			d := open(t)
			k := &kit{T: t, d: d, c: &c}
			k.init()
			tc.fn(k)
		})
	}
}

// kit is one case's state.
type kit struct {
	*testing.T
	d    block.Device
	c    *Config
	caps block.Caps
	size int64 // the size at open (0 for growable devices)
	u    int64 // request unit: max(4096, Caps().Align)
	mal  int   // buffer alignment: max(4096, Caps().MemAlign)
	rng  *rand.Rand
}

func (k *kit) init() {
	k.Helper()
	k.caps = k.d.Caps()
	k.u = max(4096, k.caps.Align)
	k.mal = max(block.DefaultMemAlign, k.caps.MemAlign)
	k.rng = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	sz, err := k.d.Size()
	if err != nil {
		k.Fatalf("Size: %v", err)
	}
	k.size = sz
	if k.c.FixedSize && sz < MinFixedSize {
		k.Fatalf("fixed-size device of %d bytes, need at least %d", sz, MinFixedSize)
	}
	if !k.c.FixedSize && sz != 0 {
		k.Fatalf("growable device opened with size %d, want 0 (empty)", sz)
	}
}

// buf returns an aligned buffer of n bytes of v.
func (k *kit) buf(n int64, v byte) []byte {
	b := block.AlignedBuf(int(n), k.mal)
	if v != 0 {
		for i := range b {
			b[i] = v
		}
	}
	return b
}

// random returns an aligned buffer of n random bytes.
func (k *kit) random(n int64) []byte {
	b := block.AlignedBuf(int(n), k.mal)
	for i := range b {
		b[i] = byte(k.rng.Uint32())
	}
	return b
}

func (k *kit) write(b []byte, off int64) {
	k.Helper()
	if err := block.WriteAt(k.d, b, off); err != nil {
		k.Fatalf("write [%d, +%d): %v", off, len(b), err)
	}
}

func (k *kit) read(off, n int64) []byte {
	k.Helper()
	return readDev(k.T, k.d, off, n, k.mal)
}

func readDev(t *testing.T, d block.Device, off, n int64, mal int) []byte {
	t.Helper()
	b := block.AlignedBuf(int(n), mal)
	for i := range b {
		b[i] = 0xEE // a read must overwrite every byte
	}
	if err := block.ReadAt(d, b, off); err != nil {
		t.Fatalf("read [%d, +%d): %v", off, n, err)
	}
	return b
}

func (k *kit) sizeNow() int64 {
	k.Helper()
	sz, err := k.d.Size()
	if err != nil {
		k.Fatalf("Size: %v", err)
	}
	return sz
}

// expect compares the device's bytes at off with want.
func (k *kit) expect(what string, off int64, want []byte) {
	k.Helper()
	expectDev(k.T, k.d, what, off, want, k.mal)
}

func expectDev(t *testing.T, d block.Device, what string, off int64, want []byte, mal int) {
	t.Helper()
	got := readDev(t, d, off, int64(len(want)), mal)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s: byte %d (device offset %d) is 0x%02x, want 0x%02x", what, i, off+int64(i), got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func (k *kit) wantErr(what string, err, target error) {
	k.Helper()
	if !errors.Is(err, target) {
		k.Fatalf("%s = %v, want %v", what, err, target)
	}
}

// region writes n random bytes at off and returns them (the state a case
// then changes).
func (k *kit) region(off, n int64) []byte {
	k.Helper()
	b := k.random(n)
	k.write(b, off)
	return bytes.Clone(b)
}

// within runs fn and fails if it does not return within d.
func (k *kit) within(what string, d time.Duration, fn func() error) {
	k.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			k.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		k.Fatalf("%s did not complete within %v while a disjoint write was held in flight (B1)", what, d)
	}
}

func (k *kit) capsCase() {
	c := k.d.Caps()
	if c != k.d.Caps() {
		k.Fatalf("Caps() changed between calls: %+v then %+v", c, k.d.Caps())
	}
	pow2 := func(x int64) bool { return x >= 1 && x&(x-1) == 0 }
	if !pow2(c.Align) || !pow2(int64(c.MemAlign)) {
		k.Fatalf("Align %d / MemAlign %d: want powers of two >= 1", c.Align, c.MemAlign)
	}
	if c.ZeroAlign != 0 && (!pow2(c.ZeroAlign) || c.ZeroAlign < c.Align) {
		k.Fatalf("ZeroAlign %d: want 0 or a power of two >= Align %d", c.ZeroAlign, c.Align)
	}
	if c.ZeroFlags&^(block.Allocate|block.MayUnmap) != 0 {
		k.Fatalf("ZeroFlags %v: only Allocate and MayUnmap are zeroing flags", c.ZeroFlags)
	}
	if c.ReqFlags&^(block.Serialising|block.NoWait) != 0 {
		k.Fatalf("ReqFlags %v: only Serialising and NoWait are request flags", c.ReqFlags)
	}
	if (c.ReqFlags&block.NoWait != 0) != (c.ReqFlags&block.Serialising != 0) {
		k.Fatalf("ReqFlags %v: NoWait only means something with Serialising", c.ReqFlags)
	}
}

// flags: a flag outside Caps() is ErrNotSupported with nothing written
// (Caps doc; B3 for Allocate; the ring's request flags are in uring's doc).
func (k *kit) flags() {
	want := k.region(0, 4*k.u)
	sz := k.sizeNow()
	const unknown = block.Flags(1 << 7)
	for _, fl := range []block.Flags{block.Allocate, block.MayUnmap, block.Serialising, block.NoWait,
		block.Serialising | block.NoWait, unknown, unknown | block.MayUnmap} {
		supported := fl&^k.caps.ZeroFlags&^k.caps.ReqFlags == 0
		err := k.d.WriteZeroes(k.u, k.u, fl)
		switch {
		case !supported:
			k.wantErr(fmt.Sprintf("WriteZeroes(%v) outside Caps %+v", fl, k.caps), err, block.ErrNotSupported)
		case fl&block.Allocate != 0 && errors.Is(err, block.ErrNotSupported):
			// B3: refused (checked in B3_allocate)
		case err != nil:
			k.Fatalf("WriteZeroes(%v) with Caps %+v: %v", fl, k.caps, err)
		default:
			// Restore for the next flag.
			k.write(want[k.u:2*k.u], k.u)
		}
	}
	k.expect("after refused requests", 0, want)
	if got := k.sizeNow(); got != sz {
		k.Fatalf("refused requests changed the size %d -> %d", sz, got)
	}
}

// ranges: negative or overflowing ranges are ErrRange; empty requests
// succeed and change nothing.
func (k *kit) ranges() {
	want := k.region(0, k.u)
	sz := k.sizeNow()
	b := k.buf(16, 1)
	k.wantErr("Readv(-1)", block.ReadAt(k.d, b, -1), block.ErrRange)
	k.wantErr("Writev(-1)", block.WriteAt(k.d, b, -1), block.ErrRange)
	k.wantErr("Writev past MaxInt64", block.WriteAt(k.d, b, math.MaxInt64-8), block.ErrRange)
	k.wantErr("Readv past MaxInt64", block.ReadAt(k.d, b, math.MaxInt64-8), block.ErrRange)
	k.wantErr("WriteZeroes(-1, n)", k.d.WriteZeroes(-1, 16, 0), block.ErrRange)
	k.wantErr("WriteZeroes(off, -1)", k.d.WriteZeroes(0, -1, 0), block.ErrRange)
	k.wantErr("WriteZeroes past MaxInt64", k.d.WriteZeroes(math.MaxInt64-8, 16, 0), block.ErrRange)
	if err := k.d.Truncate(-1); err == nil {
		k.Fatal("Truncate(-1) succeeded")
	}
	// Empty requests, inside the device and (growable) past its end.
	offs := []int64{0, 100}
	if !k.c.FixedSize {
		offs = append(offs, 1<<20)
	}
	for _, off := range offs {
		if err := k.d.Readv(off, nil); err != nil {
			k.Fatalf("empty Readv at %d: %v", off, err)
		}
		if err := k.d.Readv(off, [][]byte{{}}); err != nil {
			k.Fatalf("empty Readv at %d: %v", off, err)
		}
		if err := k.d.Writev(off, nil); err != nil {
			k.Fatalf("empty Writev at %d: %v", off, err)
		}
		if err := k.d.Writev(off, [][]byte{{}, {}}); err != nil {
			k.Fatalf("empty Writev at %d: %v", off, err)
		}
		if err := k.d.WriteZeroes(off, 0, 0); err != nil {
			k.Fatalf("empty WriteZeroes at %d: %v", off, err)
		}
	}
	if got := k.sizeNow(); got != sz {
		k.Fatalf("empty or refused requests changed the size %d -> %d", sz, got)
	}
	k.expect("after empty requests", 0, want)
}

// vectored: Writev/Readv honour every buffer of a vector in order,
// including empty ones, and vectors longer than IOV_MAX.
func (k *kit) vectored() {
	data := k.random(3 * k.u)
	cut := func(b []byte, sizes ...int) [][]byte {
		var v [][]byte
		for _, s := range sizes {
			s = min(s, len(b))
			v = append(v, b[:s])
			b = b[s:]
		}
		return append(v, b)
	}
	if err := k.d.Writev(7, cut(data, 0, 1, 4095, 0, 4096, 3)); err != nil {
		k.Fatal(err)
	}
	got := k.buf(int64(len(data)), 0xEE)
	if err := k.d.Readv(7, cut(got, 5, 0, 9000, 0)); err != nil {
		k.Fatal(err)
	}
	if i := firstDiff(got, data); i >= 0 {
		k.Fatalf("vectored round trip differs at byte %d", i)
	}
	// 1500 buffers of 16 bytes (past IOV_MAX).
	long := k.random(1500 * 16)
	if err := k.d.Writev(k.u*4, cut(long, repeat(16, 1499)...)); err != nil {
		k.Fatal(err)
	}
	got = k.buf(int64(len(long)), 0xEE)
	if err := k.d.Readv(k.u*4, cut(got, repeat(16, 1499)...)); err != nil {
		k.Fatal(err)
	}
	if i := firstDiff(got, long); i >= 0 {
		k.Fatalf("1500-buffer round trip differs at byte %d", i)
	}
	k.expect("contiguous read of the vectored writes", 7, data)
}

func repeat(v, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// ownership: the device reads the caller's buffer only until Writev
// returns (block doc, "Buffer ownership").
func (k *kit) ownership() {
	b := k.random(2 * k.u)
	want := bytes.Clone(b)
	k.write(b, 0)
	for i := range b {
		b[i] = ^b[i]
	}
	if err := k.d.Flush(); err != nil {
		k.Fatal(err)
	}
	k.expect("after the caller reused its buffer", 0, want)
}

// b1Concurrent: overlapping writes in flight at once leave, per aligned
// piece of Caps().Align bytes, one writer's value (no tearing finer than
// the alignment); disjoint ones all land; reads and zeroing of other
// ranges run alongside.
func (k *kit) b1Concurrent() {
	const g, per = 16, 16
	u := k.u
	base := 64 * u
	zbase := base + g*per*u
	rbase := zbase + g*u
	ref := k.region(rbase, 4*u)
	var wg sync.WaitGroup
	errs := make(chan error, 3*g)
	for i := range g {
		wg.Go(func() {
			own := k.buf(u, byte(i+1))
			for j := range per {
				if err := block.WriteAt(k.d, own, int64(j)*u); err != nil {
					errs <- err
					return
				}
				if err := block.WriteAt(k.d, own, base+int64(i*per+j)*u); err != nil {
					errs <- err
					return
				}
			}
			if err := k.d.WriteZeroes(zbase+int64(i)*u, u, 0); err != nil {
				errs <- err
				return
			}
			got := block.AlignedBuf(int(4*u), k.mal)
			if err := block.ReadAt(k.d, got, rbase); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, ref) {
				errs <- errors.New("a read of an untouched range returned other data")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		k.Fatal(err)
	}
	for j := range per {
		b := k.read(int64(j)*u, u)
		for p := int64(0); p < u; p += k.caps.Align {
			piece := b[p : p+k.caps.Align]
			if piece[0] == 0 || piece[0] > g || !bytes.Equal(piece, bytes.Repeat(piece[:1], len(piece))) {
				k.Fatalf("block %d torn below the alignment %d at byte %d", j, k.caps.Align, p)
			}
		}
	}
	for i := range g {
		k.expect(fmt.Sprintf("writer %d's disjoint writes", i), base+int64(i*per)*u, k.buf(per*u, byte(i+1)))
	}
	k.expect("concurrent zeroing", zbase, make([]byte, g*u))
}

// stallLen is the length of the write held in flight: distinctive, so
// that the device's own writes (metadata, background copies) are not
// caught.
const stallLen = 3 * 4096

// hold starts a write of data at off, waits until the Stall holds it
// inside the device and returns a function that releases it and returns
// its result.
func (k *kit) hold(off int64, data []byte) func() error {
	k.Helper()
	if len(data) != stallLen {
		panic("blocktest: held writes are stallLen bytes")
	}
	held, release := k.c.Stall.arm(stallLen)
	k.Cleanup(release)
	done := make(chan error, 1)
	go func() { done <- block.WriteAt(k.d, data, off) }()
	select {
	case <-held:
	case err := <-done:
		k.Fatalf("the write to hold completed without reaching the Stall (err %v): is Stall.Hook wired into the device's storage?", err)
	case <-time.After(10 * time.Second):
		k.Fatal("the write to hold never reached the Stall")
	}
	return func() error {
		release()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			k.Fatal("the held write did not complete after release")
			return nil
		}
	}
}

// b1NoWait: requests that do not overlap never wait for each other. A
// write is held inside the device (Stall) while reads, writes and zeroing
// of disjoint ranges must complete.
func (k *kit) b1NoWait() {
	if k.c.Stall == nil {
		k.Skip("no Config.Stall: cannot hold a request in flight")
	}
	u := k.u
	a, b, z := 16*u, 32*u, 48*u
	k.region(a, stallLen)
	k.region(b, stallLen)
	k.region(z, 4*u)
	da, db := k.random(stallLen), k.random(stallLen)
	wait := k.hold(a, da)
	k.within("disjoint write", 5*time.Second, func() error { return block.WriteAt(k.d, db, b) })
	k.within("disjoint read", 5*time.Second, func() error {
		got := block.AlignedBuf(stallLen, k.mal)
		if err := block.ReadAt(k.d, got, b); err != nil {
			return err
		}
		if !bytes.Equal(got, db) {
			return errors.New("read returned other data than the write before it")
		}
		return nil
	})
	k.within("disjoint WriteZeroes", 5*time.Second, func() error { return k.d.WriteZeroes(z, 4*u, 0) })
	// Right next to the held range on both sides (adjacent is disjoint).
	k.within("adjacent write", 5*time.Second, func() error { return block.WriteAt(k.d, k.buf(u, 9), a-u) })
	k.within("adjacent write", 5*time.Second, func() error { return block.WriteAt(k.d, k.buf(u, 9), a+stallLen) })
	if err := wait(); err != nil {
		k.Fatalf("held write: %v", err)
	}
	k.expect("held write", a, da)
	k.expect("disjoint write", b, db)
	k.expect("disjoint zeroing", z, make([]byte, 4*u))
	k.expect("adjacent write", a-u, k.buf(u, 9))
	k.expect("adjacent write", a+stallLen, k.buf(u, 9))
}

// b2: reads past the end are zero-filled and succeed.
func (k *kit) b2() {
	if k.c.FixedSize {
		s := k.size
		tail := k.region(s-k.u, k.u)
		want := append(bytes.Clone(tail), make([]byte, k.u)...)
		k.expect("read straddling the end", s-k.u, want)
		b1, b2 := k.buf(k.u, 0xFF), k.buf(k.u, 0xFF)
		if err := k.d.Readv(s+1<<20, [][]byte{b1, b2}); err != nil {
			k.Fatal(err)
		}
		if !bytes.Equal(b1, make([]byte, k.u)) || !bytes.Equal(b2, make([]byte, k.u)) {
			k.Fatal("vectored read past the end is not zero")
		}
		want = append(bytes.Clone(tail[k.u-100:]), make([]byte, 677)...)
		k.expect("misaligned read straddling the end", s-100, want)
		return
	}
	data := k.region(0, 1000)
	if sz := k.sizeNow(); sz != 1000 {
		k.Fatalf("size %d after writing 1000 bytes to an empty device", sz)
	}
	want := make([]byte, 2*k.u)
	copy(want, data)
	k.expect("aligned read straddling EOF", 0, want)
	b1, b2 := k.buf(k.u, 0xFF), k.buf(k.u, 0xFF)
	if err := k.d.Readv(1<<20, [][]byte{b1, b2}); err != nil {
		k.Fatal(err)
	}
	if !bytes.Equal(b1, make([]byte, k.u)) || !bytes.Equal(b2, make([]byte, k.u)) {
		k.Fatal("vectored read past EOF is not zero")
	}
	want = append(bytes.Clone(data[900:]), make([]byte, 677)...)
	k.expect("misaligned read straddling EOF", 900, want)
	if sz := k.sizeNow(); sz != 1000 {
		k.Fatalf("reads changed the size to %d", sz)
	}
}

func (k *kit) allocAlign() int64 { return max(k.caps.Align, k.caps.ZeroAlign, k.c.AllocAlign, 1) }

// b3: Allocate zeroes efficiently or fails with ErrNotSupported having
// written nothing; a range not aligned, with data at its edges (the
// region is random), is ErrNotSupported.
func (k *kit) b3() {
	al := k.allocAlign()
	u := max(al, k.u)
	want := k.region(0, 8*u)
	sz := k.sizeNow()
	unchanged := func(what string) {
		k.Helper()
		k.expect(what+": refused Allocate wrote", 0, want)
		if got := k.sizeNow(); got != sz {
			k.Fatalf("%s: refused Allocate changed the size %d -> %d", what, sz, got)
		}
	}
	if k.caps.ZeroFlags&block.Allocate == 0 {
		k.wantErr("WriteZeroes(Allocate) without Allocate in Caps", k.d.WriteZeroes(u, 2*u, block.Allocate), block.ErrNotSupported)
		unchanged("unsupported")
		return
	}
	if al > 1 {
		for _, r := range [][2]int64{{1, al}, {0, al + 1}, {al / 2, al}, {u, al - 1}} {
			k.wantErr(fmt.Sprintf("misaligned WriteZeroes(%d, %d, Allocate)", r[0], r[1]),
				k.d.WriteZeroes(r[0], r[1], block.Allocate), block.ErrNotSupported)
		}
		unchanged("misaligned")
		if k.d.Caps().ZeroFlags&block.Allocate == 0 {
			k.Fatal("a misaligned request dropped Allocate from Caps")
		}
	}
	switch err := k.d.WriteZeroes(u, 2*u, block.Allocate); {
	case err == nil:
		clear(want[u : 3*u])
		k.expect("Allocate zeroing", 0, want)
	case errors.Is(err, block.ErrNotSupported):
		unchanged("aligned")
		if k.d.Caps().ZeroFlags&block.Allocate != 0 {
			k.Fatal("an aligned Allocate request was refused but Caps still advertises Allocate")
		}
		return
	default:
		k.Fatalf("WriteZeroes(Allocate): %v", err)
	}
	if k.c.FixedSize {
		k.wantErr("Allocate past the end", k.d.WriteZeroes(k.size-u, 2*u, block.Allocate), k.c.PastEndErr)
		return
	}
	// Growing the device.
	switch err := k.d.WriteZeroes(8*u, 8*u, block.Allocate); {
	case err == nil:
		if got := k.sizeNow(); got != 16*u {
			k.Fatalf("size %d after Allocate zeroing up to %d", got, 16*u)
		}
		k.expect("Allocate past EOF", 0, append(want, make([]byte, 8*u)...))
	case errors.Is(err, block.ErrNotSupported):
		unchanged("extending")
	default:
		k.Fatalf("extending WriteZeroes(Allocate): %v", err)
	}
}

// b4: WriteZeroes without Allocate zeroes any range (it may write zero
// buffers), growing a growable device.
func (k *kit) b4() {
	u := k.u
	want := k.region(0, 16*u)
	fls := []block.Flags{0}
	if k.caps.ZeroFlags&block.MayUnmap != 0 {
		fls = append(fls, block.MayUnmap)
	}
	for i, fl := range fls {
		off := int64(i) * 8 * u
		for _, r := range [][2]int64{{off + 513, 3000}, {off + 2*u, 2 * u}, {off + 5*u - 1, u + 2}} {
			if err := k.d.WriteZeroes(r[0], r[1], fl); err != nil {
				k.Fatalf("WriteZeroes(%d, %d, %v): %v", r[0], r[1], fl, err)
			}
			clear(want[r[0] : r[0]+r[1]])
		}
	}
	k.expect("WriteZeroes", 0, want)
	if k.c.FixedSize {
		end := k.region(k.size-5000, 5000)
		if err := k.d.WriteZeroes(k.size-3000, 3000, 0); err != nil {
			k.Fatal(err)
		}
		clear(end[2000:])
		k.expect("WriteZeroes up to the end", k.size-5000, end)
		k.wantErr("WriteZeroes past the end", k.d.WriteZeroes(k.size-10, 20, 0), k.c.PastEndErr)
		k.expect("refused WriteZeroes past the end", k.size-5000, end)
		return
	}
	// Past EOF, unaligned: grows the device.
	fl := fls[len(fls)-1]
	if err := k.d.WriteZeroes(16*u+10, 5000, fl); err != nil {
		k.Fatal(err)
	}
	if sz := k.sizeNow(); sz != 16*u+5010 {
		k.Fatalf("size %d after zeroing up to %d", sz, 16*u+5010)
	}
	k.expect("WriteZeroes past EOF", 0, append(want, make([]byte, 5010)...))
}

// b5: Serialising|NoWait returns ErrBusy, without side effects, instead of
// waiting on an overlapping in-flight request; Serialising alone waits.
// A device without them in Caps().ReqFlags refuses them (ErrNotSupported,
// nothing written).
func (k *kit) b5() {
	u := k.u
	a := 16 * u
	if k.caps.ReqFlags&block.Serialising == 0 {
		want := k.region(0, 32*u)
		sz := k.sizeNow()
		for _, fl := range []block.Flags{block.Serialising, block.Serialising | block.NoWait} {
			k.wantErr(fmt.Sprintf("WriteZeroes(%v)", fl), k.d.WriteZeroes(a, u, fl), block.ErrNotSupported)
			if zw, ok := k.d.(block.ZeroWriter); ok {
				k.wantErr(fmt.Sprintf("ZeroThenWritev(%v)", fl),
					zw.ZeroThenWritev(a, u, fl, a, [][]byte{k.buf(u, 1)}), block.ErrNotSupported)
			}
		}
		k.expect("refused Serialising requests", 0, want)
		if got := k.sizeNow(); got != sz {
			k.Fatalf("refused Serialising requests changed the size %d -> %d", sz, got)
		}
		return
	}
	// Nothing in flight: the request runs.
	k.region(0, 64*u)
	if err := k.d.WriteZeroes(0, u, block.Serialising|block.NoWait); err != nil {
		k.Fatalf("Serialising|NoWait with nothing in flight: %v", err)
	}
	k.expect("Serialising|NoWait zeroing", 0, make([]byte, u))
	if k.c.Stall == nil {
		k.Skip("no Config.Stall: cannot hold a request in flight for the ErrBusy case")
	}
	k.region(a, stallLen)
	data := k.random(stallLen)
	wait := k.hold(a, data)
	k.busy("Serialising|NoWait overlapping an in-flight write", a+100, 200)
	k.busy("Serialising|NoWait overlapping the last byte of an in-flight write", a+stallLen-1, 2*u)
	k.within("disjoint Serialising|NoWait", 5*time.Second, func() error {
		return k.d.WriteZeroes(a+stallLen, u, block.Serialising|block.NoWait)
	})
	ser := make(chan error, 1)
	go func() { ser <- k.d.WriteZeroes(a+2*4096, 4096, block.Serialising) }()
	select {
	case err := <-ser:
		k.Fatalf("Serialising request overlapping an in-flight write did not wait (err %v)", err)
	case <-time.After(30 * time.Millisecond):
	}
	if err := wait(); err != nil {
		k.Fatalf("held write: %v", err)
	}
	select {
	case err := <-ser:
		if err != nil {
			k.Fatalf("Serialising request: %v", err)
		}
	case <-time.After(10 * time.Second):
		k.Fatal("Serialising request never completed")
	}
	// The refused requests did nothing; the serialised one ran after the
	// write it waited for.
	want := bytes.Clone(data)
	clear(want[2*4096:])
	k.expect("after ErrBusy and a serialised zeroing", a, want)
	k.expect("disjoint Serialising|NoWait zeroing", a+stallLen, make([]byte, u))
}

// busy expects a Serialising|NoWait zeroing of [off, off+n) to fail with
// ErrBusy at once (not after the in-flight request it overlaps).
func (k *kit) busy(what string, off, n int64) {
	k.Helper()
	done := make(chan error, 1)
	go func() { done <- k.d.WriteZeroes(off, n, block.Serialising|block.NoWait) }()
	select {
	case err := <-done:
		k.wantErr(what, err, block.ErrBusy)
	case <-time.After(5 * time.Second):
		k.Fatalf("%s waited for the in-flight request instead of failing with ErrBusy (B5)", what)
	}
}

// b6: Flush makes every write that completed before it durable.
func (k *kit) b6() {
	u := k.u
	x := k.region(0, 16*u)
	if err := k.d.WriteZeroes(2*u, u, 0); err != nil {
		k.Fatal(err)
	}
	clear(x[2*u : 3*u])
	// Concurrent writes that all complete before Flush is called.
	var wg sync.WaitGroup
	ys := make([][]byte, 8)
	for i := range ys {
		ys[i] = k.random(u)
		wg.Go(func() {
			if err := block.WriteAt(k.d, ys[i], 32*u+int64(i)*u); err != nil {
				k.Error(err)
			}
		})
	}
	wg.Wait()
	if err := k.d.Flush(); err != nil {
		k.Fatalf("Flush: %v", err)
	}
	k.region(64*u, 4*u) // not flushed: may or may not survive
	if err := k.d.Flush(); err != nil {
		k.Fatalf("second Flush: %v", err)
	}
	k.expect("flushed data", 0, x)
	if k.c.Crash == nil {
		return
	}
	c := k.c.Crash(k.T, k.d)
	expectDev(k.T, c, "flushed data after a power cut", 0, x, k.mal)
	expectDev(k.T, c, "flushed concurrent writes after a power cut", 32*u, bytes.Join(ys, nil), k.mal)
}

// b7: after Close every method returns os.ErrClosed.
func (k *kit) b7() {
	k.region(0, k.u)
	if err := k.d.Close(); err != nil {
		k.Fatalf("Close: %v", err)
	}
	b := k.buf(k.u, 0)
	_, szErr := k.d.Size()
	errs := map[string]error{
		"Readv":       block.ReadAt(k.d, b, 0),
		"Readv(past)": block.ReadAt(k.d, b, 1<<40),
		"Writev":      block.WriteAt(k.d, b, 0),
		"WriteZeroes": k.d.WriteZeroes(0, k.u, 0),
		"Flush":       k.d.Flush(),
		"Size":        szErr,
		"Truncate":    k.d.Truncate(k.size + k.u),
		"Close":       k.d.Close(),
	}
	if zw, ok := k.d.(block.ZeroWriter); ok {
		errs["ZeroThenWritev"] = zw.ZeroThenWritev(0, k.u, 0, 0, [][]byte{b})
	}
	for name, err := range errs {
		if !errors.Is(err, os.ErrClosed) {
			k.Errorf("%s after Close = %v, want os.ErrClosed (B7)", name, err)
		}
	}
}

// misaligned: offsets, lengths and buffer addresses that break O_DIRECT
// rules still work (slowly), coherent with aligned I/O.
func (k *kit) misaligned() {
	raw := make([]byte, 10000)
	buf := raw[3 : 3+5000]
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	off := 4096 + int64(3)
	if err := block.WriteAt(k.d, buf, off); err != nil {
		k.Fatal(err)
	}
	if err := k.d.Writev(20000, [][]byte{buf[:100], buf[100:4196]}); err != nil {
		k.Fatal(err)
	}
	got := make([]byte, 5001)[1:]
	if err := block.ReadAt(k.d, got, off); err != nil {
		k.Fatal(err)
	}
	if i := firstDiff(got, buf); i >= 0 {
		k.Fatalf("misaligned round trip differs at byte %d", i)
	}
	g2 := make([]byte, 4196)
	if err := k.d.Readv(20000, [][]byte{g2[:1], g2[1:]}); err != nil {
		k.Fatal(err)
	}
	if i := firstDiff(g2, buf[:4196]); i >= 0 {
		k.Fatalf("misaligned vectored round trip differs at byte %d", i)
	}
	a := k.read(4096, 2*k.u)
	if i := firstDiff(a[3:5003], buf); i >= 0 {
		k.Fatalf("aligned read does not see the misaligned write (byte %d)", i)
	}
	// An aligned write is seen by a misaligned read.
	al := k.random(k.u)
	k.write(al, 8*k.u)
	got = make([]byte, 101)[1:]
	if err := block.ReadAt(k.d, got, 8*k.u+5); err != nil {
		k.Fatal(err)
	}
	if !bytes.Equal(got, al[5:105]) {
		k.Fatal("misaligned read does not see the aligned write")
	}
}

// zeroThenWritev: block.ZeroWriter zeroes then writes; if the zeroing is
// refused the write is not performed.
func (k *kit) zeroThenWritev() {
	zw, ok := k.d.(block.ZeroWriter)
	if !ok {
		k.Skip("device does not implement block.ZeroWriter")
	}
	u := max(k.allocAlign(), k.u)
	want := k.region(0, 8*u)
	data := k.random(4096)
	if err := zw.ZeroThenWritev(u, 2*u, 0, u+100, [][]byte{data[:1000]}); err != nil {
		k.Fatalf("ZeroThenWritev without flags: %v", err)
	}
	clear(want[u : 3*u])
	copy(want[u+100:], data[:1000])
	k.expect("ZeroThenWritev", 0, want)
	woff := 4*u + 4096
	switch err := zw.ZeroThenWritev(4*u, 2*u, block.Allocate, woff, [][]byte{data}); {
	case err == nil:
		if k.caps.ZeroFlags&block.Allocate == 0 {
			k.Fatal("ZeroThenWritev(Allocate) succeeded without Allocate in Caps")
		}
		clear(want[4*u : 6*u])
		copy(want[woff:], data)
	case errors.Is(err, block.ErrNotSupported):
	default:
		k.Fatalf("ZeroThenWritev(Allocate): %v", err)
	}
	k.expect("ZeroThenWritev(Allocate) (refused: nothing written)", 0, want)
	if al := k.allocAlign(); al > 1 && k.caps.ZeroFlags&block.Allocate != 0 {
		k.wantErr("misaligned ZeroThenWritev(Allocate)",
			zw.ZeroThenWritev(1, al, block.Allocate, 0, [][]byte{data}), block.ErrNotSupported)
		k.expect("refused misaligned ZeroThenWritev", 0, want)
	}
}

// truncate: grow and shrink as Config.Truncate says; refusals change
// nothing.
func (k *kit) truncate() {
	u := k.u
	base := k.size // 0 on growable devices
	if !k.c.FixedSize {
		k.region(0, 2*u)
		base = 2 * u
	}
	tail := k.read(base-2*u, 2*u)
	refused := func(size int64) {
		k.Helper()
		k.wantErr(fmt.Sprintf("Truncate(%d) on a device of %d bytes", size, base), k.d.Truncate(size), k.c.TruncateErr)
		if got := k.sizeNow(); got != base {
			k.Fatalf("refused Truncate changed the size %d -> %d", base, got)
		}
		k.expect("refused Truncate", base-2*u, tail)
	}
	if k.c.Truncate == TruncateNone {
		refused(base + u)
		refused(base - u)
		return
	}
	if err := k.d.Truncate(base + 2*u); err != nil {
		k.Fatalf("growing Truncate: %v", err)
	}
	if got := k.sizeNow(); got != base+2*u {
		k.Fatalf("size %d after Truncate(%d)", got, base+2*u)
	}
	k.expect("grown by Truncate", base-2*u, append(bytes.Clone(tail), make([]byte, 2*u)...))
	k.region(base, u)
	if k.c.Truncate == TruncateGrow {
		base += 2 * u
		tail = k.read(base-2*u, 2*u)
		refused(base - u)
		return
	}
	if err := k.d.Truncate(base - u); err != nil {
		k.Fatalf("shrinking Truncate: %v", err)
	}
	if got := k.sizeNow(); got != base-u {
		k.Fatalf("size %d after Truncate(%d)", got, base-u)
	}
	// Growing again reads zeros where the cut data was.
	if err := k.d.Truncate(base + u); err != nil {
		k.Fatal(err)
	}
	want := append(bytes.Clone(tail[:u]), make([]byte, 2*u)...)
	k.expect("shrunk then grown", base-2*u, want)
}

// readonly: the read-only variant refuses every write, reads the data and
// flushes.
func (k *kit) readonly() {
	if k.c.ReadOnly == nil {
		k.Skip("no Config.ReadOnly: the device has no read-only variant")
	}
	want := k.region(0, 2*k.u)
	if err := k.d.Flush(); err != nil {
		k.Fatal(err)
	}
	ro := k.c.ReadOnly(k.T, k.d)
	roErr := k.c.ReadOnlyErr
	b := k.buf(k.u, 1)
	k.wantErr("Writev on read-only", block.WriteAt(ro, b, 0), roErr)
	k.wantErr("WriteZeroes on read-only", ro.WriteZeroes(0, k.u, 0), roErr)
	if err := ro.WriteZeroes(0, k.u, block.Allocate); !errors.Is(err, roErr) &&
		!(ro.Caps().ZeroFlags&block.Allocate == 0 && errors.Is(err, block.ErrNotSupported)) {
		k.Fatalf("WriteZeroes(Allocate) on read-only = %v, want %v", err, roErr)
	}
	if err := ro.Truncate(k.size + k.u); !errors.Is(err, roErr) &&
		!(k.c.Truncate == TruncateNone && errors.Is(err, k.c.TruncateErr)) {
		k.Fatalf("Truncate on read-only = %v, want %v", err, roErr)
	}
	if zw, ok := ro.(block.ZeroWriter); ok {
		k.wantErr("ZeroThenWritev on read-only", zw.ZeroThenWritev(0, k.u, 0, 0, [][]byte{b}), roErr)
	}
	expectDev(k.T, ro, "read-only read", 0, want, k.mal)
	if err := ro.Flush(); err != nil {
		k.Fatalf("Flush on read-only: %v", err)
	}
	if err := ro.Close(); err != nil {
		k.Fatalf("Close of read-only: %v", err)
	}
	k.expect("read-write device after the read-only one", 0, want)
}

// Stall holds one write inside a device so that a case can have a request
// in flight: wire Hook into the storage under the device (for memdev,
// memdev.Options.OnWrite), where it is called with the request's range
// held. A Stall serves one Run at a time.
type Stall struct {
	mu      sync.Mutex
	n       int64 // length of the write to hold; 0: none
	held    chan struct{}
	release chan struct{}
}

// NewStall returns a disarmed Stall.
func NewStall() *Stall { return &Stall{} }

// Hook holds the first write of the armed length until the case releases
// it; other writes pass.
func (s *Stall) Hook(off, n int64) {
	s.mu.Lock()
	if s.n == 0 || n != s.n {
		s.mu.Unlock()
		return
	}
	s.n = 0
	held, rel := s.held, s.release
	s.mu.Unlock()
	close(held)
	<-rel
}

// arm makes Hook hold the next write of n bytes; held is closed when it
// is held; release (idempotent) lets it go and disarms.
func (s *Stall) arm(n int64) (held <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, r := make(chan struct{}), make(chan struct{})
	s.n, s.held, s.release = n, h, r
	var once sync.Once
	return h, func() {
		once.Do(func() {
			s.mu.Lock()
			if s.release == r {
				s.n = 0
			}
			s.mu.Unlock()
			close(r)
		})
	}
}

// CrashMem is a Config.Crash for a memdev, or a layer that maps bytes 1:1
// onto a memdev reached through Unwrap() chains (latdev, errordev,
// tracedev, throttle, a raw window at offset 0): the memdev's crash clone
// with every unflushed write lost.
func CrashMem(t *testing.T, d block.Device) block.Device {
	t.Helper()
	for {
		switch x := d.(type) {
		case *memdev.Dev:
			return x.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
		case interface{ Unwrap() block.Device }:
			d = x.Unwrap()
		default:
			t.Fatalf("blocktest.CrashMem: no memdev under %T", d)
			return nil
		}
	}
}
