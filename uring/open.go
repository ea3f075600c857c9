//go:build linux

package uring

import (
	"fmt"
	"io"
	"os"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Open opens path as a File.
func Open(path string, o Options) (*File, error) {
	o = o.withDefaults()
	fd, err := openFd(path, o)
	if err != nil {
		return nil, err
	}
	f := &File{path: path, fd: fd, readOnly: o.ReadOnly, noFlush: o.NoFlush, direct: o.Direct,
		align: 1, memAlign: 1, done: make(chan struct{})}
	err = f.probe()
	if err == nil {
		err = f.pickBackend(o)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f.initZeroing(o)
	return f, nil
}

// openFd opens the File's one descriptor (U1).
func openFd(path string, o Options) (int, error) {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if o.ReadOnly {
		flags = unix.O_RDONLY | unix.O_CLOEXEC
	}
	if o.Create && !o.ReadOnly {
		flags |= unix.O_CREAT
	}
	op := "open"
	if o.Direct {
		flags |= unix.O_DIRECT
		op = "open O_DIRECT"
	}
	fd, err := openRetry(path, flags, uint32(o.Perm))
	if err != nil {
		return -1, &os.PathError{Op: op, Path: path, Err: err}
	}
	return fd, nil
}

// probe learns what requests on the file must respect and what stores
// it: the O_DIRECT alignments and bounce buffers (U1), the zeroing
// alignment (U2), the size (U3) and the media (U9).
func (f *File) probe() error {
	if f.direct {
		f.align, f.memAlign = probeAlign(f.fd)
		size := int(max(bounceSize/f.align, 1) * f.align)
		al := max(f.memAlign, block.DefaultMemAlign)
		f.bounce.New = func() any {
			b := &bounceBuf{b: block.AlignedBuf(size, al)}
			return b
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: f.path, Err: err}
	}
	f.zeroAlign = probeZeroAlign(f.fd, &st, f.align)
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		n, err := unix.Seek(f.fd, 0, io.SeekEnd) // pread/pwrite only: the offset is free
		if err != nil {
			return &os.PathError{Op: "lseek", Path: f.path, Err: err}
		}
		f.blockDev = true
		f.devSize.Store(n)
	}
	f.eof.Store(max(st.Size, f.devSize.Load()))
	f.media, f.mediaWhy, f.metered = detectMedia(f.fd)
	f.allocOK.Store(true)
	f.zeroOK.Store(true)
	f.punchOK.Store(true)
	return nil
}

// pickBackend gives f its backend: the ring unless Options.Backend is
// Threads or io_uring is unavailable here; then plain syscalls, and
// BackendReason says why (with Backend Ring it is an error instead).
func (f *File) pickBackend(o Options) error {
	f.backend, f.reason = Threads, "requested"
	if o.Backend != Threads {
		err := f.useRing(o)
		if err == nil {
			f.backend = Ring
			return nil
		}
		if o.Backend == Ring {
			return fmt.Errorf("uring: io_uring unavailable: %w", err)
		}
		f.reason = "io_uring unavailable: " + err.Error()
	}
	f.io = &syncIO{fd: f.fd, sem: make(chan struct{}, o.Workers), m: &f.m}
	return nil
}

// useRing sets up a ring for f (ringIO, or hybrid with Options.Hybrid).
func (f *File) useRing(o Options) error {
	p := ProbeRing()
	err := p.Err
	if testNoRing != nil {
		err = testNoRing
	}
	if err != nil {
		return err
	}
	r, err := newRing(o.Entries, &f.m)
	if err != nil {
		return err
	}
	r.merge = !o.NoMerge
	r.register(f.fd, !o.ReadOnly)
	fallocK := p.Has(iosys.IORING_OP_FALLOCATE)
	sys := syncIO{fd: f.fd, m: &f.m}
	rb := &ringIO{r: r, fd: f.fd, done: f.done, fallocOnRing: fallocK && !o.SyscallFallocate, sync: sys}
	if fallocK {
		f.link = rb
	}
	f.io = rb
	if o.Hybrid {
		f.io = &hybrid{ringIO: rb, sync: sys}
	}
	return nil
}

// testNoRing, when set by a test, makes Open behave as if io_uring were
// unavailable for that reason.
var testNoRing error

// Opener returns an opener (qcow2.Options.Opener, CreateOptions.Opener:
// the image, its backing files and data file) with the given options;
// ReadOnly is taken from each call, and Create is cleared (the engine
// creates files itself).
func Opener(o Options) func(path string, readOnly bool) (block.Device, error) {
	return func(path string, readOnly bool) (block.Device, error) {
		o := o
		o.ReadOnly = readOnly
		o.Create = false
		f, err := Open(path, o)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
}

func openRetry(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// probeAlign finds the O_DIRECT offset/length and memory alignment.
func probeAlign(fd int) (int64, int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && n > 0 {
			return int64(n), n
		}
	}
	var sx unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx) == nil &&
		sx.Mask&unix.STATX_DIOALIGN != 0 && sx.Dio_offset_align > 0 {
		mem := int(sx.Dio_mem_align)
		if mem < 1 {
			mem = 1
		}
		return int64(sx.Dio_offset_align), mem
	}
	return block.DefaultMemAlign, block.DefaultMemAlign
}

// maxZeroAlign caps the zeroing alignment taken from st_blksize/f_bsize:
// network filesystems report their transfer size there (1 MiB and more),
// which is no allocation unit.
const maxZeroAlign = 64 << 10

// probeZeroAlign finds the alignment fallocate zeroing needs to stay off
// the page cache (U2): the filesystem block (the larger of st_blksize and
// statfs f_bsize, powers of two up to maxZeroAlign), or the logical
// sector size of a block device; never less than align.
func probeZeroAlign(fd int, st *unix.Stat_t, align int64) int64 {
	a := max(align, 1)
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && n > 0 && n&(n-1) == 0 {
			a = max(a, int64(n))
		}
		return a
	}
	cand := [2]int64{int64(st.Blksize)}
	var sfs unix.Statfs_t
	if unix.Fstatfs(fd, &sfs) == nil {
		cand[1] = int64(sfs.Bsize)
	}
	for _, c := range cand {
		if c > 1 && c&(c-1) == 0 {
			a = max(a, min(c, maxZeroAlign))
		}
	}
	return a
}
