package filter

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// DefaultGranularity is the mirror's chunk size (QEMU's default for
// drive-mirror with a 64 KiB-cluster target is the cluster; 1 MiB keeps the
// bitmap small and the copy requests large).
const DefaultGranularity = 1 << 20

// MirrorOptions configure a Mirror.
type MirrorOptions struct {
	// Granularity is the chunk size of the copy and the dirty bitmap
	// (default DefaultGranularity; a power of two).
	Granularity int64
	// Paused: NewMirror neither grows the target nor starts the copy;
	// Start does. For a caller that may still refuse the setup (a spec
	// whose other nodes fail), so that a refused one changes no target.
	Paused bool
}

// MirrorMetrics count the copy's work.
type MirrorMetrics struct {
	ChunksCopied   atomic.Int64 // chunks copied by the background job
	ChunksRedirty  atomic.Int64 // chunks a guest write made dirty again
	TargetWrites   atomic.Int64 // guest writes sent to the target too
	TargetFailures atomic.Int64 // guest writes the target refused (chunk redirtied)
	DeferredWrites atomic.Int64 // guest writes into not-yet-copied chunks, left to the copier
	Discards       atomic.Int64 // guest discards of the source, their chunks left to the copier
}

// Mirror is QEMU's drive-mirror as a filter: guest I/O goes to the source
// while a background goroutine copies the source to the target chunk by
// chunk.
//
// Design (MR1..MR3):
//
//	MR1  dirty[c] means the target's chunk c may differ from the source. All
//	     chunks start dirty; the copier clears a chunk's bit before copying
//	     it. Whatever may change the source without the same change on the
//	     target (a deferred write, a failed target write, a source write
//	     or discard that failed part-way, every discard) sets it again.
//	MR2  A guest write holds the lock of its byte range; the copy of a
//	     chunk holds the whole chunk, so the two exclude each other while
//	     guest writes that do not overlap never wait for each other (B1),
//	     even inside one chunk. A guest write writes the source, then: if
//	     all its chunks are clean it writes the target too, otherwise it
//	     marks them dirty and leaves them to the copier. So a chunk's copy
//	     never races a guest write to it, and a clean chunk stays equal on
//	     both sides (FL5). A discard (FL8) holds its range the same way,
//	     discards the source and marks its chunks dirty whatever their
//	     state: what a discarded range reads is the device's affair (zeros,
//	     a backing file's bytes, partial clusters left as they were), so a
//	     discard on the target could leave it reading otherwise than the
//	     source; the copier instead copies what the source now reads (zeros
//	     as a zeroing with MayUnmap, which frees the target's space too).
//	     This is QEMU's background mirror, whose dirty bitmap records the
//	     discard (bdrv_mirror_top_pdiscard discards the source).
//	MR3  Converged (no dirty chunk) is stable but for MR1's causes: a
//	     failed target write or a discard dirties a chunk again, and the
//	     copier then runs again. Complete waits again when one came between
//	     its wait and its quiescing, so the target it hands over reads what
//	     the source reads.
//
// The size is fixed while mirroring: writes past the source's size at
// NewMirror fail with block.ErrRange and Truncate is not supported, as
// QEMU blocks resizing a mirrored device.
type Mirror struct {
	src, tgt block.Device
	gran     int64
	size     int64
	lk       rangeLock

	mu        sync.Mutex
	cond      sync.Cond
	dirty     []bool
	ndirty    int
	err       error // the copy failed; sticky
	stop      bool
	completed bool
	closed    bool
	started   bool          // the copier runs (Start)
	done      chan struct{} // closed when the copier ends

	M MirrorMetrics
}

var (
	_ block.Device    = (*Mirror)(nil)
	_ block.Discarder = (*Mirror)(nil)
)

// NewMirror starts mirroring src to tgt. The target is grown to the
// source's size if it is smaller. The Mirror owns src, and tgt until
// Complete (FL4).
func NewMirror(src, tgt block.Device, o MirrorOptions) (*Mirror, error) {
	g := o.Granularity
	if g == 0 {
		g = DefaultGranularity
	}
	if g < 512 || g&(g-1) != 0 {
		return nil, fmt.Errorf("filter: mirror granularity %d is not a power of two >= 512", g)
	}
	size, err := src.Size()
	if err != nil {
		return nil, err
	}
	if _, err := tgt.Size(); err != nil {
		return nil, err
	}
	nc := int((size + g - 1) / g)
	m := &Mirror{src: src, tgt: tgt, gran: g, size: size, dirty: make([]bool, nc), ndirty: nc, done: make(chan struct{})}
	for i := range m.dirty {
		m.dirty[i] = true
	}
	m.cond.L = &m.mu
	if !o.Paused {
		if err := m.Start(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Start grows the target to the source's size if it is smaller and
// starts the copy, once (a Mirror made with MirrorOptions.Paused; NewMirror
// starts any other). Until then every chunk stays dirty: guest writes go
// to the source only (MR2).
func (m *Mirror) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed || m.completed {
		return nil
	}
	tsize, err := m.tgt.Size()
	if err != nil {
		return err
	}
	if tsize < m.size {
		if err := m.tgt.Truncate(m.size); err != nil {
			return fmt.Errorf("filter: mirror: grow target to %d: %w", m.size, err)
		}
	}
	m.started = true
	go m.copier()
	return nil
}

// copier is the background job: copy dirty chunks in offset order,
// wrapping around, until stopped (MR1, MR3).
func (m *Mirror) copier() {
	defer close(m.done)
	buf := make([]byte, m.gran)
	cursor := 0
	for {
		m.mu.Lock()
		for m.ndirty == 0 && !m.stop {
			m.cond.Wait()
		}
		if m.stop {
			m.mu.Unlock()
			return
		}
		for !m.dirty[cursor] {
			cursor = (cursor + 1) % len(m.dirty)
		}
		c := cursor
		m.mu.Unlock()

		off := int64(c) * m.gran
		n := min(m.gran, m.size-off)
		unlock := m.lk.lock(off, n, true)
		m.mu.Lock()
		copyIt := m.dirty[c]
		if copyIt {
			m.dirty[c] = false
			m.ndirty--
		}
		m.mu.Unlock()
		var err error
		if copyIt {
			err = m.copyChunk(off, buf[:n])
		}
		unlock()

		m.mu.Lock()
		if err != nil {
			m.dirty[c] = true
			m.ndirty++
			m.err = fmt.Errorf("filter: mirror: copy [%d, +%d): %w", off, n, err)
			m.stop = true
		} else if copyIt {
			m.M.ChunksCopied.Add(1)
		}
		m.cond.Broadcast() // Wait() may be watching ndirty
		m.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (m *Mirror) copyChunk(off int64, buf []byte) error {
	if err := block.ReadAt(m.src, buf, off); err != nil {
		return err
	}
	if isZero(buf) {
		// Keeps a sparse target sparse; MayUnmap lets it punch holes.
		err := m.tgt.WriteZeroes(off, int64(len(buf)), m.tgt.Caps().ZeroFlags&block.MayUnmap)
		if !errors.Is(err, block.ErrNotSupported) {
			return err
		}
	}
	return block.WriteAt(m.tgt, buf, off)
}

// Converged reports whether the target equals the source (MR3).
func (m *Mirror) Converged() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ndirty == 0 && m.err == nil
}

// Err is the copy job's error, if it failed.
func (m *Mirror) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Wait blocks until the mirror has converged or the copy failed.
func (m *Mirror) Wait() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.ndirty > 0 && m.err == nil && !m.completed {
		if m.stop {
			return ErrCompleted
		}
		m.cond.Wait()
	}
	return m.err
}

// Complete waits for convergence, quiesces guest I/O, stops the job,
// flushes the target and hands it to the caller, who now owns it (QEMU's
// block-job-complete). Later requests to the Mirror fail with
// ErrCompleted; Close then closes only the source. A guest request that
// dirtied a chunk between the wait and the quiescing (a discard, a failed
// target write) makes it wait again (MR3).
func (m *Mirror) Complete() (block.Device, error) {
	for {
		if err := m.Wait(); err != nil {
			return nil, err
		}
		// The whole-device lock waits for in-flight guest requests, so
		// none straddles the hand-over.
		unlock := m.lk.lock(0, max(m.size, 1), true)
		m.mu.Lock()
		if m.completed {
			m.mu.Unlock()
			unlock()
			return nil, ErrCompleted
		}
		if err := m.err; err != nil {
			m.mu.Unlock()
			unlock()
			return nil, err
		}
		if m.ndirty > 0 {
			m.mu.Unlock()
			unlock()
			continue
		}
		m.completed, m.stop = true, true
		started := m.started
		m.cond.Broadcast()
		m.mu.Unlock()
		if started {
			<-m.done
		}
		err := m.tgt.Flush()
		unlock()
		if err != nil {
			return nil, err
		}
		return m.tgt, nil
	}
}

func (m *Mirror) checkLive() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return block.ErrClosed
	}
	if m.completed {
		return ErrCompleted
	}
	return nil
}

func (m *Mirror) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// chunks returns the indexes [c0, c1) of the chunks [off, off+n) touches.
func (m *Mirror) chunks(off, n int64) (c0, c1 int) {
	end := min((off+max(n, 1)+m.gran-1)&^(m.gran-1), int64(len(m.dirty))*m.gran)
	return int(off / m.gran), int(end / m.gran)
}

// guestWrite applies MR2: source first, then the target if every chunk is
// clean, else redirty the chunks for the copier; a nil tgt (a discard)
// always leaves them to the copier. flags are the request's (NoWait:
// ErrBusy instead of waiting for an overlapping request, B5).
func (m *Mirror) guestWrite(off, n int64, flags block.Flags, src, tgt func() error) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if off+n > m.size {
		return block.ErrRange
	}
	if err := m.checkLive(); err != nil {
		return err
	}
	c0, c1 := m.chunks(off, n)
	unlock, err := m.lk.lockReq(off, n, flags)
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.checkLive(); err != nil { // Complete ran while we waited
		return err
	}
	if err := src(); err != nil {
		// ErrNotSupported and ErrBusy promise nothing was done (B3,
		// B5); any other failure may have changed part of the source
		// (MR1).
		if !errors.Is(err, block.ErrNotSupported) && !errors.Is(err, block.ErrBusy) {
			m.redirty(c0, c1)
		}
		return err
	}
	if tgt == nil {
		m.M.Discards.Add(1)
		m.redirty(c0, c1)
		return nil
	}
	m.mu.Lock()
	clean := true
	for c := c0; c < c1; c++ {
		clean = clean && !m.dirty[c]
	}
	m.mu.Unlock()
	if clean {
		m.M.TargetWrites.Add(1)
		if tgt() == nil {
			return nil
		}
		m.M.TargetFailures.Add(1)
	} else {
		m.M.DeferredWrites.Add(1)
	}
	m.redirty(c0, c1)
	return nil
}

// redirty marks chunks [c0, c1) dirty and wakes the copier (MR1).
func (m *Mirror) redirty(c0, c1 int) {
	m.mu.Lock()
	for c := c0; c < c1; c++ {
		if !m.dirty[c] {
			m.dirty[c] = true
			m.ndirty++
			m.M.ChunksRedirty.Add(1)
		}
	}
	m.cond.Broadcast()
	m.mu.Unlock()
}

func (m *Mirror) Readv(off int64, bufs [][]byte) error {
	if err := m.checkLive(); err != nil {
		return err
	}
	return m.src.Readv(off, bufs)
}

func (m *Mirror) Writev(off int64, bufs [][]byte) error {
	return m.guestWrite(off, block.VecLen(bufs), 0,
		func() error { return m.src.Writev(off, bufs) },
		func() error { return m.tgt.Writev(off, bufs) })
}

// WriteZeroes passes the request to the source as flagged and to the
// target as a zeroing request with only the flags the target supports:
// without Allocate if it cannot allocate, and as a plain zeroing (which
// may write zero buffers) if it still refuses.
func (m *Mirror) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := CheckFlags(m.Caps(), off, n, flags); err != nil {
		return err
	}
	return m.guestWrite(off, n, flags,
		func() error { return m.src.WriteZeroes(off, n, flags) },
		func() error {
			tc := m.tgt.Caps()
			tf := flags & (tc.ZeroFlags | tc.ReqFlags&schedFlags) &^ block.NoWait
			err := m.tgt.WriteZeroes(off, n, tf)
			if errors.Is(err, block.ErrNotSupported) {
				err = m.tgt.WriteZeroes(off, n, 0)
			}
			return err
		})
}

// Discard discards [off, off+n) of the source and marks its chunks dirty,
// so the copier brings the target to what the source then reads (MR2,
// FL8): QEMU's mirror filter forwards a discard to its source and its dirty
// bitmap records it for the target. The target need not be a Discarder.
// Past the size it is block.ErrRange; on a source that is no
// block.Discarder it is block.ErrNotSupported, and nothing is discarded
// or dirtied.
func (m *Mirror) Discard(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if off+n > m.size {
		return block.ErrRange
	}
	if err := m.checkLive(); err != nil {
		return err
	}
	d, ok := m.src.(block.Discarder)
	if !ok {
		return block.ErrNotSupported
	}
	return m.guestWrite(off, n, 0, func() error { return d.Discard(off, n) }, nil)
}

// Flush flushes the source, and the target while it is mirrored so that
// a Complete after a crash-free run finds it durable.
func (m *Mirror) Flush() error {
	if err := m.checkLive(); err != nil {
		return err
	}
	return errors.Join(m.src.Flush(), m.tgt.Flush())
}

func (m *Mirror) Size() (int64, error) {
	if m.isClosed() {
		return 0, block.ErrClosed
	}
	return m.size, nil
}

// Truncate is not supported while mirroring.
func (m *Mirror) Truncate(int64) error {
	if m.isClosed() {
		return block.ErrClosed
	}
	return block.ErrNotSupported
}

// Caps are the source's: the target receives zeroing with the flags it
// supports (see WriteZeroes), so it narrows nothing but alignment, and
// the medium only when the source is RAM and the target is not (FL1).
func (m *Mirror) Caps() block.Caps {
	c := m.src.Caps()
	tc := m.tgt.Caps()
	c.Align = max(c.Align, tc.Align)
	c.MemAlign = max(c.MemAlign, tc.MemAlign)
	c.Metered = c.Metered || tc.Metered // writes go to both
	c.Fixed = c.Fixed || tc.Fixed
	c.Media = writesMedia(c.Media, tc.Media)
	c.AllocWritten = c.AllocWritten && tc.AllocWritten
	c.MergesWrites = c.MergesWrites && tc.MergesWrites
	return c
}

// Close stops the copy job (the target may then be incomplete) and closes
// the source, and the target unless Complete handed it over.
func (m *Mirror) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return block.ErrClosed
	}
	m.closed = true
	m.stop = true
	completed := m.completed
	if !m.started {
		close(m.done) // no copier to end it
	}
	m.cond.Broadcast()
	m.mu.Unlock()
	<-m.done
	err := m.src.Close()
	if !completed {
		err = errors.Join(err, m.tgt.Close())
	}
	return err
}
