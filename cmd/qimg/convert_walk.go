package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// stepKind says what convert does with a step of its walk.
type stepKind int

const (
	stepCopy     stepKind = iota // read (unless zero) and written
	stepLeaveOut                 // zeros left out (dst.leaveOut)
	stepBacking                  // left to the output's backing file
)

// convertStep is one step of convert's walk: n bytes at off.
type convertStep struct {
	off, n int64
	kind   stepKind
	zero   bool // a copy of zeros (sparse 0): written without reading
}

// blockKind is qemu-img convert's ImgConvertBlockStatus of a run.
type blockKind int

const (
	blkData    blockKind = iota // BLK_DATA: read and written
	blkZero                     // BLK_ZERO: reads as zeros
	blkBacking                  // BLK_BACKING_FILE: left to the output's backing file
)

// convertWalk is qemu-img convert's walk over its input
// (convert_iteration_sectors), one step per iteration: the block status
// of the part of src under the step (bdrv_block_status_above, asked for
// at most up to the part's end; runs rounded down to the part's cluster
// size, counted from the part's start, when longer), a data run cut into
// chunks of buf bytes counted from the start of its run, and, for a
// compressed output (cluster > 0), whole output clusters: a run shorter
// than one is read and written as data, a longer one is rounded down to
// them.
type convertWalk struct {
	src     *convertSrc
	dst     convertOut
	sparse  int64
	buf     int64 // qemu-img's buf_sectors, in bytes
	cluster int64 // a compressed output's cluster size (0: not compressed)
}

// copyBytes is what the walk copies (qemu-img's allocated_sectors, in
// bytes: -p's total), 0 unless count is set.
func (w convertWalk) copyBytes(count bool) (int64, error) {
	var total int64
	if !count {
		return 0, nil
	}
	err := w.walk(func(s convertStep) error {
		if s.kind == stepCopy {
			total += s.n
		}
		return nil
	})
	return total, err
}

// walk calls fn with each step. It stops at fn's first error.
func (w convertWalk) walk(fn func(convertStep) error) error {
	src, dst := w.src, w.dst
	total := roundUp(src.size, 512)
	var next int64 // qemu-img's sector_next_status, in bytes
	kind := blkData
	for off := int64(0); off < total; {
		i := src.part(off)
		p, local := src.parts[i], off-src.start[i]
		n := total - off
		postBackingZero := false
		if dst.backing && dst.backingEnd >= 0 {
			if off >= dst.backingEnd {
				postBackingZero = true
			} else {
				n = min(n, dst.backingEnd-off) // zeros differ past it
			}
		}
		if next <= off {
			status := p.st.Status
			if dst.backing {
				status = p.st.TopStatus
			}
			st, err := status(local, n)
			for q := n; err != nil && dst.salvage; {
				// qemu-img narrows the query to a quarter of its
				// sectors at a time, down to one sector, which it then
				// reads as data.
				if q <= 512 {
					dst.salvaged("error while reading block status at offset %d: %v", local, err)
					st, err = qcow2.ChainStatus{Len: 512, Data: true, Allocated: true}, nil
					break
				}
				q = (q/512 + 3) / 4 * 512
				st, err = status(local, q)
			}
			if err != nil {
				return fmt.Errorf("error while reading block status at offset %d: %w", local, err)
			}
			n = roundUp(max(st.Len, 1), 512)
			if tail := (local + n) % p.clusterSize; n > tail {
				n -= tail
			}
			switch {
			case st.Zero && postBackingZero:
				kind = blkBacking
			case st.Zero:
				kind = blkZero
			case st.Data || !dst.backing:
				kind = blkData
			default:
				kind = blkBacking // unallocated in the source's own layer
			}
			next = off + n
		}
		n = min(n, next-off)
		if kind == blkData {
			n = min(n, w.buf)
		}
		if w.cluster > 0 {
			// Whole clusters: a shorter run is taken as data (and
			// stays so until the next status query, as in qemu-img).
			if n < w.cluster {
				n, kind = min(w.cluster, total-off), blkData
			} else {
				n -= n % w.cluster
			}
		}
		s := convertStep{off: off, n: n}
		switch {
		case kind == blkBacking:
			s.kind = stepBacking
		case kind == blkZero && w.sparse > 0:
			s.kind = stepLeaveOut
		case kind == blkZero:
			s.n, s.zero = min(n, w.buf), true
		}
		if err := fn(s); err != nil {
			return err
		}
		off += s.n
	}
	return nil
}
