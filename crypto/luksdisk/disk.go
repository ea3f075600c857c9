package luksdisk

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luks"
)

// Errors. Match them with errors.Is.
var (
	// ErrNoKey: the disk was opened without its key (Options.NoKey), or
	// opened without a passphrase (QEMU's "Parameter 'key-secret' is
	// required for cipher").
	ErrNoKey = errors.New("Parameter 'key-secret' is required for cipher")
	// ErrReadOnly: a write to a disk opened read-only (it is
	// block.ErrReadOnly).
	ErrReadOnly = block.ErrReadOnly
	// ErrShortFile: the file ends before the payload starts.
	ErrShortFile = errors.New("luksdisk: file is shorter than the LUKS payload offset")
)

// maxChunk bounds the bounce buffer of one request: longer requests are
// done in pieces of this many bytes.
const maxChunk = 1 << 20

const sector = luks.SectorSize

// Options say how Open opens a disk.
type Options struct {
	// Passphrase unlocks a key slot. Nil without NoKey is ErrNoKey.
	Passphrase []byte
	// NoKey opens the header only (LV4).
	NoKey bool
	// Writable allows writes and Truncate.
	Writable bool
}

// Disk is a LUKS volume as a block.Device of its payload.
type Disk struct {
	f       block.Device
	h       *luks.Header
	c       *luks.Cipher // nil when opened without the key (LV4)
	pass    []byte       // the passphrase it was opened with (Amend's default)
	payload int64
	ro      bool

	grow sync.Mutex // held by a write that grows the volume
	mu   sync.Mutex
	cond *sync.Cond
	held []heldRange // sector ranges being read or written (LV2)
}

var _ block.Device = (*Disk)(nil)

// Open reads the LUKS header at the start of f and unlocks it with
// o.Passphrase (unless o.NoKey). The Disk owns f from then on: Close
// closes it; on error f is left open.
func Open(f block.Device, o Options) (*Disk, error) {
	if !o.NoKey && o.Passphrase == nil {
		return nil, ErrNoKey
	}
	hb := make([]byte, luks.HeaderSize)
	if err := f.Readv(0, [][]byte{hb}); err != nil {
		return nil, err
	}
	h, err := luks.ParseHeader(hb)
	if err != nil {
		return nil, qemuWords(err)
	}
	if n, err := f.Size(); err != nil {
		return nil, err
	} else if n < int64(h.PayloadBytes()) {
		// QEMU's open fails on the length it cannot compute.
		return nil, &OpenError{"Could not refresh total sector count: Input/output error", ErrShortFile}
	}
	d := &Disk{f: f, h: h, payload: int64(h.PayloadBytes()), ro: !o.Writable, pass: o.Passphrase}
	d.cond = sync.NewCond(&d.mu)
	if !o.NoKey {
		if d.c, err = h.Unlock(block.ReaderAt{D: f}, o.Passphrase); err != nil {
			return nil, qemuWords(err)
		}
	}
	return d, nil
}

// OpenError is an open's failure in QEMU's words (its crypto driver's),
// wrapping crypto/luks's error (errors.Is: luks.ErrNotLUKS,
// luks.ErrVersion, luks.ErrWrongKey...).
type OpenError struct {
	Msg string
	Err error
}

func (e *OpenError) Error() string { return e.Msg }
func (e *OpenError) Unwrap() error { return e.Err }

// qemuWords words err as QEMU 7.2's qcrypto_block_luks_open does where
// QEMU makes the same check (luks.QemuText).
func qemuWords(err error) error {
	if errors.Is(err, luks.ErrWrongKey) {
		return &OpenError{"Invalid password, cannot unlock any keyslot", err}
	}
	if m := luks.QemuText(err); m != err.Error() {
		return &OpenError{m, err}
	}
	return err
}

// Header is the volume's LUKS header.
func (d *Disk) Header() *luks.Header { return d.h }

// PayloadOffset is where the payload starts in the file, in bytes.
func (d *Disk) PayloadOffset() int64 { return d.payload }

// File is the device the disk reads and writes.
func (d *Disk) File() block.Device { return d.f }

// Unwrap is the file under the disk.
func (d *Disk) Unwrap() block.Device { return d.f }

// Size is the file's size less the payload offset (LV1), rounded up to
// a whole sector as QEMU's block layer counts it.
func (d *Disk) Size() (int64, error) {
	n, err := d.f.Size()
	if err != nil {
		return 0, err
	}
	if n < d.payload {
		return 0, ErrShortFile
	}
	return roundUp(n-d.payload, sector), nil
}

// Readv decrypts the payload bytes at off into bufs (zeros past the end,
// as the file reads them: never decrypted).
func (d *Disk) Readv(off int64, bufs [][]byte) error {
	if d.c == nil {
		return ErrNoKey
	}
	n := vecLen(bufs)
	if err := d.checkRange(off, n); err != nil {
		return err
	}
	size, err := d.Size()
	if err != nil {
		return err
	}
	for done := int64(0); done < n; {
		first := (off + done) / sector * sector
		end := min(roundUp(off+n, sector), first+maxChunk)
		cn := min(end, off+n) - (off + done)
		b := make([]byte, end-first)
		unlock := d.lock(first/sector, end/sector, false)
		err := d.readPlain(first, b, size)
		unlock()
		if err != nil {
			return err
		}
		copyInto(bufs, done, b[off+done-first:off+done-first+cn])
		done += cn
	}
	return nil
}

// readPlain reads and decrypts the whole sectors b covers at first
// (sector aligned); sectors at or past size read as zeros.
func (d *Disk) readPlain(first int64, b []byte, size int64) error {
	in := max(0, min(int64(len(b)), roundUp(size, sector)-first))
	clear(b[in:])
	if in == 0 {
		return nil
	}
	if err := d.f.Readv(d.payload+first, [][]byte{b[:in]}); err != nil {
		return err
	}
	return d.c.DecryptSectors(b[:in], uint64(first/sector))
}

// checkRange refuses a negative range, or one whose sectors would end
// in the file past the largest offset.
func (d *Disk) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off > math.MaxInt64-d.payload-n-sector {
		return fmt.Errorf("luksdisk: %d+%d: %w", off, n, block.ErrRange)
	}
	return nil
}

// Writev encrypts bufs and writes them at off (LV2).
func (d *Disk) Writev(off int64, bufs [][]byte) error {
	return d.write(off, vecLen(bufs), func(dst []byte, at int64) { copyFrom(dst, bufs, at) })
}

// WriteZeroes writes encrypted zero sectors over [off, off+n) (LV3).
// MayUnmap is allowed (and changes nothing); any other flag is
// ErrNotSupported.
func (d *Disk) WriteZeroes(off, n int64, flags block.Flags) error {
	if flags&^block.MayUnmap != 0 {
		return block.ErrNotSupported
	}
	return d.write(off, n, func(dst []byte, _ int64) { clear(dst) })
}

// Discard does nothing (LV3).
func (d *Disk) Discard(off, n int64) error {
	if d.ro {
		return ErrReadOnly
	}
	return nil
}

// write puts n bytes at off, fill giving the plaintext of the guest
// bytes [off+at, off+at+len(dst)).
func (d *Disk) write(off, n int64, fill func(dst []byte, at int64)) error {
	if d.c == nil {
		return ErrNoKey
	}
	if d.ro {
		return ErrReadOnly
	}
	if err := d.checkRange(off, n); err != nil {
		return err
	}
	if n > 0 {
		size, err := d.Size()
		if err != nil {
			return err
		}
		if off+n > size {
			// It grows the volume: one growing write at a time, each
			// seeing the size the one before left, so that the sectors
			// between the end and the write become encrypted zeros
			// (they read as zeros, not as the noise of the file's hole)
			// and never overwrite another growing write's bytes.
			d.grow.Lock()
			defer d.grow.Unlock()
			if size, err = d.Size(); err != nil {
				return err
			}
			if gap := off / sector * sector; gap > size {
				if err := d.writeRange(size, gap-size, func(dst []byte, _ int64) { clear(dst) }); err != nil {
					return err
				}
			}
		}
	}
	return d.writeRange(off, n, fill)
}

// writeRange writes n bytes at off in chunks (write's checks done).
func (d *Disk) writeRange(off, n int64, fill func(dst []byte, at int64)) error {
	for done := int64(0); done < n; {
		first := (off + done) / sector * sector
		end := min(roundUp(off+n, sector), first+maxChunk)
		cn := min(end, off+n) - (off + done)
		if err := d.writeChunk(first, end, off+done, cn, func(dst []byte) { fill(dst, done) }); err != nil {
			return err
		}
		done += cn
	}
	return nil
}

// writeChunk writes the sectors [first, end) whose guest bytes
// [at, at+n) are new: the sectors it covers in part are read first, all
// under the range lock (LV2).
func (d *Disk) writeChunk(first, end, at, n int64, fill func(dst []byte)) error {
	unlock := d.lock(first/sector, end/sector, true)
	defer unlock()
	b := make([]byte, end-first)
	if at != first || at+n != end {
		size, err := d.Size()
		if err != nil {
			return err
		}
		if at != first {
			if err := d.readPlain(first, b[:sector], size); err != nil {
				return err
			}
		}
		if last := end - sector; at+n != end && (last != first || at == first) {
			if err := d.readPlain(last, b[last-first:], size); err != nil {
				return err
			}
		}
	}
	fill(b[at-first : at-first+n])
	if err := d.c.EncryptSectors(b, uint64(first/sector)); err != nil {
		return err
	}
	return d.f.Writev(d.payload+first, [][]byte{b})
}

// heldRange is a sector range [s, e) a request holds: a write holds it
// exclusively, a read shared.
type heldRange struct {
	s, e int64
	excl bool
}

// lock waits until no request holds a sector of [s, e) in a way that
// conflicts (a write conflicts with everything, reads with writes only),
// then holds them: a read never sees a sector a partial write is
// rewriting half written (LV2).
func (d *Disk) lock(s, e int64, excl bool) func() {
	r := &heldRange{s, e, excl}
	d.mu.Lock()
	for d.conflicts(r) {
		d.cond.Wait()
	}
	d.held = append(d.held, *r)
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		for i, h := range d.held {
			if h == *r {
				d.held = append(d.held[:i], d.held[i+1:]...)
				break
			}
		}
		d.cond.Broadcast()
		d.mu.Unlock()
	}
}

func (d *Disk) conflicts(r *heldRange) bool {
	for _, h := range d.held {
		if r.s < h.e && h.s < r.e && (r.excl || h.excl) {
			return true
		}
	}
	return false
}

// Flush flushes the file.
func (d *Disk) Flush() error { return d.f.Flush() }

// Truncate sets the payload's size, in whole sectors: grown space reads
// as zeros, written as encrypted zeros (the block.Device contract; LV6),
// and a size inside a sector keeps that sector whole, its bytes past
// size zeroed. QEMU's resize leaves the file's zeros, which decrypt to
// noise: ResizeFile does that.
func (d *Disk) Truncate(size int64) error {
	if d.ro {
		return ErrReadOnly
	}
	if size < 0 {
		return fmt.Errorf("luksdisk: negative size %d", size)
	}
	if d.c == nil {
		return ErrNoKey
	}
	cur, err := d.Size()
	if err != nil {
		return err
	}
	end := roundUp(size, sector)
	if size < cur {
		if size%sector == 0 {
			return d.f.Truncate(d.payload + size)
		}
		// The sector size falls in: its bytes past size become zeros.
		first := size - size%sector
		unlock := d.lock(first/sector, first/sector+1, true)
		defer unlock()
		b := make([]byte, sector)
		if err := d.readPlain(first, b, cur); err != nil {
			return err
		}
		clear(b[size-first:])
		if err := d.f.Truncate(d.payload + end); err != nil {
			return err
		}
		return d.writeSector(first, b)
	}
	if err := d.f.Truncate(d.payload + end); err != nil {
		return err
	}
	if end > cur {
		return d.WriteZeroes(cur, end-cur, 0)
	}
	return nil
}

// writeSector encrypts the plaintext sector b and writes it at first.
func (d *Disk) writeSector(first int64, b []byte) error {
	if err := d.c.EncryptSectors(b, uint64(first/sector)); err != nil {
		return err
	}
	return d.f.Writev(d.payload+first, [][]byte{b})
}

// ResizeFile sets the payload's size as QEMU's crypto driver does: the
// file only, grown space left as the file's zeros (noise once
// decrypted; LV6).
func (d *Disk) ResizeFile(size int64) error {
	if d.ro {
		return ErrReadOnly
	}
	if size < 0 {
		return fmt.Errorf("luksdisk: negative size %d", size)
	}
	return d.f.Truncate(d.payload + size)
}

// Caps are the file's, without efficient zeroing (LV3) and with 512-byte
// requests on the efficient path.
func (d *Disk) Caps() block.Caps {
	c := d.f.Caps()
	c.ZeroFlags = block.MayUnmap
	c.ReqFlags = 0
	c.Align = max(c.Align, sector)
	c.ZeroAlign = 0
	c.MergesWrites = false
	c.AllocWritten = false
	return c
}

// Close closes the file.
func (d *Disk) Close() error { return d.f.Close() }

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }

func vecLen(bufs [][]byte) int64 {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	return n
}

// copyInto copies src into the bytes of bufs starting at byte at.
func copyInto(bufs [][]byte, at int64, src []byte) {
	for _, b := range bufs {
		if at >= int64(len(b)) {
			at -= int64(len(b))
			continue
		}
		c := copy(b[at:], src)
		src = src[c:]
		at = 0
		if len(src) == 0 {
			return
		}
	}
}

// copyFrom fills dst from the bytes of bufs starting at byte at.
func copyFrom(dst []byte, bufs [][]byte, at int64) {
	for _, b := range bufs {
		if at >= int64(len(b)) {
			at -= int64(len(b))
			continue
		}
		c := copy(dst, b[at:])
		dst = dst[c:]
		at = 0
		if len(dst) == 0 {
			return
		}
	}
}
