package filter

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/qring/qring/block"
)

// MismatchError is a blkverify read whose test and reference data differ.
// It matches ErrMismatch under errors.Is.
type MismatchError struct {
	// Off is the device offset of the first differing byte.
	Off int64
	// ReqOff and ReqLen are the read request.
	ReqOff, ReqLen int64
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("filter: blkverify: contents mismatch at offset %d (read [%d, +%d))", e.Off, e.ReqOff, e.ReqLen)
}

// Is makes a *MismatchError match ErrMismatch.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Blkverify is QEMU's blkverify: every read goes to a test device and a
// reference device and the results are compared; writes, zeroing, flush
// and truncate go to both. Requests are serialised per range (FL3) so
// overlapping writes cannot leave the two devices in different orders.
//
// It is no block.Discarder (FL8): QEMU's blkverify driver has no pdiscard,
// and a discard leaves each device reading what it defines, which the
// comparison of later reads would report as a mismatch. A discard, direct
// or queued, is block.ErrNotSupported and reaches neither device.
type Blkverify struct {
	test, ref block.Device
	lk        rangeLock
}

var _ block.Device = (*Blkverify)(nil)

// NewBlkverify compares test against ref. It owns both (FL4).
func NewBlkverify(test, ref block.Device) *Blkverify {
	return &Blkverify{test: test, ref: ref}
}

// Test and Ref return the children.
func (b *Blkverify) Test() block.Device { return b.test }
func (b *Blkverify) Ref() block.Device  { return b.ref }

func both(f func(d block.Device) error, test, ref block.Device) error {
	devs := [2]block.Device{test, ref}
	errs := parallel(2, func(i int) error { return f(devs[i]) })
	if errs[0] != nil {
		return fmt.Errorf("blkverify test: %w", errs[0])
	}
	if errs[1] != nil {
		return fmt.Errorf("blkverify reference: %w", errs[1])
	}
	return nil
}

func (b *Blkverify) Readv(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	defer b.lk.lock(off, n, false)()
	ref := make([]byte, n)
	errs := parallel(2, func(i int) error {
		if i == 0 {
			return b.test.Readv(off, bufs)
		}
		return block.ReadAt(b.ref, ref, off)
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	pos := off
	for _, buf := range bufs {
		r := ref[:len(buf)]
		if !bytes.Equal(buf, r) {
			i := 0
			for buf[i] == r[i] {
				i++
			}
			return &MismatchError{Off: pos + int64(i), ReqOff: off, ReqLen: n}
		}
		ref = ref[len(buf):]
		pos += int64(len(buf))
	}
	return nil
}

func (b *Blkverify) Writev(off int64, bufs [][]byte) error {
	return b.lk.writev(off, bufs, func(int64) error {
		return both(func(d block.Device) error { return d.Writev(off, bufs) }, b.test, b.ref)
	})
}

func (b *Blkverify) WriteZeroes(off, n int64, flags block.Flags) error {
	return b.lk.writeZeroes(b.Caps(), off, n, flags, func() error {
		return both(func(d block.Device) error { return d.WriteZeroes(off, n, flags) }, b.test, b.ref)
	})
}

func (b *Blkverify) Flush() error {
	return both(block.Device.Flush, b.test, b.ref)
}

// Size is the test device's, as QEMU's blkverify.
func (b *Blkverify) Size() (int64, error) { return b.test.Size() }

func (b *Blkverify) Truncate(size int64) error {
	return both(func(d block.Device) error { return d.Truncate(size) }, b.test, b.ref)
}

// Caps: both devices receive every request (FL1).
func (b *Blkverify) Caps() block.Caps { return CapsOf(b.test, b.ref) }

func (b *Blkverify) Close() error {
	return errors.Join(b.test.Close(), b.ref.Close())
}
