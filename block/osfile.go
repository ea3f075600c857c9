package block

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// OSFile is a portable Device over an *os.File using ReadAt/WriteAt. It
// supports no efficient zeroing, so Allocate requests get ErrNotSupported;
// WriteZeroes writes zero buffers, which honours MayUnmap (a permission:
// the range reads as zeros). It takes no request flags (Caps().ReqFlags
// == 0): Serialising and NoWait get ErrNotSupported. The engine uses it when the caller gives no
// device opener; binaries pass the io_uring backend instead (package
// uring, whose Threads backend is the same idea on raw syscalls, with
// O_DIRECT, preadv, fallocate and fdatasync).
type OSFile struct {
	f        *os.File
	readOnly bool
	mu       sync.RWMutex // guards closed against in-flight calls
	closed   bool
	lost     atomic.Pointer[error] // the first failed fsync (B6)
	syncMu   sync.Mutex            // serialises fsync
	fixed    bool                  // a block device: Caps say Fixed
	locks    FDLocks               // the image locks held (B8)
}

var _ Device = (*OSFile)(nil)

// OpenOSFile opens path (read-only, or read-write) as an OSFile.
func OpenOSFile(path string, readOnly bool) (*OSFile, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	o := &OSFile{f: f, readOnly: readOnly}
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		o.fixed = true
	}
	return o, nil
}

// enter admits a request unless o is closed (B7); the request leaves
// with o.mu.RUnlock.
func (o *OSFile) enter() error {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// enterWrite checks a request that modifies [off, off+n) and enters it.
func (o *OSFile) enterWrite(off, n int64) error {
	if err := CheckRange(off, n); err != nil {
		return err
	}
	if o.readOnly {
		return ErrReadOnly
	}
	return o.enter()
}

func (o *OSFile) Readv(off int64, bufs [][]byte) error {
	if err := CheckRange(off, VecLen(bufs)); err != nil {
		return err
	}
	if err := o.enter(); err != nil {
		return err
	}
	defer o.mu.RUnlock()
	for _, b := range bufs {
		n, err := o.f.ReadAt(b, off)
		if err == io.EOF {
			clear(b[n:]) // past EOF reads as zeros (B2)
		} else if err != nil {
			return &OpError{Op: "read", Off: off, Len: int64(len(b)), Err: err}
		}
		off += int64(len(b))
	}
	return nil
}

func (o *OSFile) Writev(off int64, bufs [][]byte) error {
	if err := o.enterWrite(off, VecLen(bufs)); err != nil {
		return err
	}
	defer o.mu.RUnlock()
	for _, b := range bufs {
		if _, err := o.f.WriteAt(b, off); err != nil {
			return &OpError{Op: "write", Off: off, Len: int64(len(b)), Err: err}
		}
		off += int64(len(b))
	}
	return nil
}

func (o *OSFile) WriteZeroes(off, n int64, flags Flags) error {
	if err := CheckRange(off, n); err != nil {
		return err
	}
	if flags&^MayUnmap != 0 {
		return ErrNotSupported // Allocate, or request flags (ReqFlags == 0)
	}
	if o.readOnly {
		return ErrReadOnly
	}
	if n == 0 {
		if err := o.enter(); err != nil {
			return err
		}
		o.mu.RUnlock()
		return nil
	}
	return WriteZeroBuffers(o, off, n)
}

func (o *OSFile) Flush() error {
	if err := o.enter(); err != nil {
		return err
	}
	defer o.mu.RUnlock()
	if o.readOnly {
		return nil
	}
	// One fsync at a time: the kernel reports a write-back error to one
	// of several concurrent calls, and a flush waiting here must see it.
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	if first := o.lost.Load(); first != nil { // B6: failures stick
		return &OpError{Op: "flush", Err: fmt.Errorf("%w (first failure: %w)", ErrFlushFailed, *first)}
	}
	if err := o.f.Sync(); err != nil {
		o.lost.CompareAndSwap(nil, &err)
		return err
	}
	return nil
}

func (o *OSFile) Size() (int64, error) {
	if err := o.enter(); err != nil {
		return 0, err
	}
	defer o.mu.RUnlock()
	return o.size()
}

// size is the file's size, or a block device's (whose stat says 0): the
// end a seek finds, the offset being free since every request says its
// own.
func (o *OSFile) size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return st.Size(), nil
	}
	return o.f.Seek(0, io.SeekEnd)
}

// Truncate changes a file's size. A block device keeps its own, as
// QEMU's host_device: a size up to it changes nothing, a larger one is
// refused.
func (o *OSFile) Truncate(size int64) error {
	if err := o.enterWrite(size, 0); err != nil { // ErrRange if size < 0
		return err
	}
	defer o.mu.RUnlock()
	if st, err := o.f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		n, err := o.size()
		if err == nil && size > n {
			err = &OpError{Op: "truncate", Off: size, Err: errors.New("cannot grow a block device")}
		}
		return err
	}
	return o.f.Truncate(size)
}

func (o *OSFile) Caps() Caps { return Caps{ZeroFlags: MayUnmap, Align: 1, MemAlign: 1, Fixed: o.fixed} }

func (o *OSFile) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	o.closed = true
	return o.f.Close()
}

var _ Locker = (*OSFile)(nil)

// Lock implements Locker with QEMU's lock bytes (FDLocks), as package
// uring's files: QEMU and an engine over OSFile refuse to write an image
// the other uses. Close releases the locks.
func (o *OSFile) Lock(perm, shared Perm) error {
	if err := o.enter(); err != nil {
		return err
	}
	defer o.mu.RUnlock()
	return o.locks.Lock(int(o.f.Fd()), perm, shared)
}

var _ DataMapper = (*OSFile)(nil)

// DataRun implements DataMapper (SeekDataRun).
func (o *OSFile) DataRun(off, n int64) (bool, int64, error) {
	if off < 0 || n < 0 || off > off+n {
		return false, 0, ErrRange
	}
	if err := o.enter(); err != nil {
		return false, 0, err
	}
	defer o.mu.RUnlock()
	data, run := SeekDataRun(int(o.f.Fd()), off, n)
	return data, run, nil
}

// AllocatedSize implements DataMapper: st_blocks * 512.
func (o *OSFile) AllocatedSize() (int64, error) {
	if err := o.enter(); err != nil {
		return 0, err
	}
	defer o.mu.RUnlock()
	return statAllocated(int(o.f.Fd()))
}
