package imgopen

import (
	"errors"
	"sync"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// probeLen is the part of an image a format probe reads.
const probeLen = format.ProbeLen

// ProbedWarning is what qemu-nbd and qemu-io print when they open a
// writable image whose format they probed as raw (%s: its name).
const ProbedWarning = "WARNING: Image format was not specified for '%s' and probing guessed raw.\n" +
	"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n" +
	"         Specify the 'raw' format explicitly to remove the restrictions.\n"

// NewProbeGuard puts d, a raw image whose format was probed, behind
// probeGuard (qnbd's export, qimg io's image).
func NewProbeGuard(d block.Device) block.Device { return &probeGuard{Device: d} }

// probeGuard is a raw image whose format was probed, not given: as
// QEMU's raw driver does for such an image, it refuses with EPERM a write
// after which the first 512 bytes would probe as another format
// (format.Probe, without a file name, as QEMU's raw_check_write). A
// client could otherwise write a qcow2 header there, naming any host
// file as its backing file, and the next start without -f would serve
// that image, and that file's contents, to it.
//
// It has no queue of its own (block.Queuer) so that every write passes
// through Writev; Discard and the rest go to the device.
type probeGuard struct {
	block.Device
	mu sync.Mutex // a write into the first 512 bytes, with its check
}

// Unwrap returns the guarded device.
func (g *probeGuard) Unwrap() block.Device { return g.Device }

// Writev implements block.Device. A write that covers only part of the
// first 512 bytes is checked with the rest read from the device.
func (g *probeGuard) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if off >= probeLen || n == 0 || off < 0 {
		return g.Device.Writev(off, bufs)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	head := make([]byte, probeLen)
	if off > 0 || n < probeLen {
		if err := block.ReadAt(g.Device, head, 0); err != nil {
			return err
		}
	}
	p := head[off:]
	for _, b := range bufs {
		if len(p) == 0 {
			break
		}
		p = p[copy(p, b):]
	}
	if format.Probe(head, "") != "raw" {
		return &block.OpError{Op: "write", Off: off, Len: n, Err: syscall.EPERM}
	}
	return g.Device.Writev(off, bufs)
}

// WriteZeroes implements block.Device. Zeros can make the first 512
// bytes probe as another format too (the newline ending a comment line
// of a VMDK text descriptor, a LUKS header's version): a zeroing into
// them is checked as a write of zeros is.
func (g *probeGuard) WriteZeroes(off, n int64, f block.Flags) error {
	if off >= probeLen || n <= 0 || off < 0 {
		return g.Device.WriteZeroes(off, n, f)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok, err := g.zeroedIsRaw(off, n); err != nil || !ok {
		if err == nil {
			err = &block.OpError{Op: "write zeroes", Off: off, Len: n, Err: syscall.EPERM}
		}
		return err
	}
	return g.Device.WriteZeroes(off, n, f)
}

// zeroedIsRaw reports whether the first 512 bytes still probe as raw
// with [off, off+n) zeroed.
func (g *probeGuard) zeroedIsRaw(off, n int64) (bool, error) {
	head := make([]byte, probeLen)
	if err := block.ReadAt(g.Device, head, 0); err != nil {
		return false, err
	}
	clear(head[off:min(off+n, probeLen)])
	return format.Probe(head, "") == "raw", nil
}

// Discard implements block.Discarder (ErrNotSupported when the device
// is none: the server then unmaps by zeroing, WriteZeroes above). A
// discarded range reads as zeros on a raw file: one that would make the
// first 512 bytes probe as another format leaves them alone (TRIM is a
// hint) and unmaps the rest.
func (g *probeGuard) Discard(off, n int64) error {
	if off >= probeLen || n <= 0 || off < 0 {
		return g.discard(off, n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok, err := g.zeroedIsRaw(off, n); err != nil || ok {
		if err != nil {
			return err
		}
		return g.discard(off, n)
	}
	end := off + n
	if end <= probeLen {
		return nil
	}
	err := g.discard(probeLen, end-probeLen)
	if errors.Is(err, block.ErrNotSupported) {
		err = nil
		if g.Device.Caps().ZeroFlags&block.MayUnmap != 0 {
			if err = g.Device.WriteZeroes(probeLen, end-probeLen, block.MayUnmap); errors.Is(err, block.ErrNotSupported) {
				err = nil
			}
		}
	}
	return err
}

// discard is the device's Discard, or ErrNotSupported.
func (g *probeGuard) discard(off, n int64) error {
	if d, ok := g.Device.(block.Discarder); ok {
		return d.Discard(off, n)
	}
	return block.ErrNotSupported
}
