package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Whence values of lseek(2) for sparse files (Linux).
const (
	seekData = 3
	seekHole = 4
)

// FileDiff returns the first offset where the contents of files a and b
// differ (holes read as zeros), the shorter file's length when one is a
// proper prefix of the other, or -1 when they are equal. It reads only
// the ranges where either file has data (SEEK_DATA), so comparing two
// sparse 1 GiB files with little data costs little (reading them whole
// took seconds each).
func FileDiff(a, b string) (int64, error) {
	fa, err := os.Open(a)
	if err != nil {
		return 0, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return 0, err
	}
	defer fb.Close()
	sa, err := fa.Stat()
	if err != nil {
		return 0, err
	}
	sb, err := fb.Stat()
	if err != nil {
		return 0, err
	}
	n := min(sa.Size(), sb.Size())
	ra, err := dataRanges(fa, sa.Size())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", a, err)
	}
	rb, err := dataRanges(fb, sb.Size())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", b, err)
	}
	pa, pb := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, r := range mergeRanges(append(ra, rb...)) {
		for off := r[0]; off < min(r[1], n); {
			k := min(int64(len(pa)), min(r[1], n)-off)
			if err := readFull(fa, pa[:k], off); err != nil {
				return 0, err
			}
			if err := readFull(fb, pb[:k], off); err != nil {
				return 0, err
			}
			if !bytes.Equal(pa[:k], pb[:k]) {
				if d := FirstDiff(pa[:k], pb[:k]); d >= 0 {
					return off + int64(d), nil
				}
			}
			off += k
		}
	}
	if sa.Size() != sb.Size() {
		return n, nil
	}
	return -1, nil
}

// readFull reads len(p) bytes at off.
func readFull(f *os.File, p []byte, off int64) error {
	_, err := f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// dataRanges lists the [start, end) ranges of f (size bytes) that hold
// data by SEEK_DATA and SEEK_HOLE; the whole file where the file system
// does not say.
func dataRanges(f *os.File, size int64) ([][2]int64, error) {
	fd := int(f.Fd())
	var out [][2]int64
	for off := int64(0); off < size; {
		d, err := syscall.Seek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data past off
		}
		if err != nil {
			return [][2]int64{{0, size}}, nil // no SEEK_DATA here: all of it
		}
		h, err := syscall.Seek(fd, d, seekHole)
		if err != nil {
			h = size
		}
		out = append(out, [2]int64{d, min(h, size)})
		off = h
	}
	return out, nil
}

// mergeRanges sorts and merges overlapping ranges.
func mergeRanges(r [][2]int64) [][2]int64 {
	for i := 1; i < len(r); i++ { // insertion sort: short lists
		for j := i; j > 0 && r[j][0] < r[j-1][0]; j-- {
			r[j], r[j-1] = r[j-1], r[j]
		}
	}
	var out [][2]int64
	for _, x := range r {
		if k := len(out); k > 0 && x[0] <= out[k-1][1] {
			out[k-1][1] = max(out[k-1][1], x[1])
			continue
		}
		out = append(out, x)
	}
	return out
}
