package main

import (
	"errors"
	"fmt"
	"math"
)

// Sizes qemu-img create takes that the engine does not: past 2^62 up to
// INT64_MAX as the size argument, and -o size= up to 2^64-1, which QEMU
// keeps in an int64 (optionSize), so 2^63 and up are negative. qemu-img
// prints its Formatting line with the size as it holds it, then the
// format refuses the size when it creates the image, each in its own
// words; qimg does the same, with the same files left behind:
//
//   - qcow2: rounded up to whole sectors (wrapping past INT64_MAX-511),
//     a negative size is "Could not resize image: Image size cannot be
//     negative", one past BDRV_MAX_LENGTH "Could not resize image:
//     offset(N) exceeds maximum(M)", and any other "too large for file
//     format" (its L1 table limit, reached from 2^62 at every cluster
//     size).
//   - raw: the file system's limit (EFBIG: too large) or, negative, the
//     file driver's truncate: "Could not resize file: Invalid argument",
//     or with preallocation "Cannot use preallocation for shrinking
//     files" (a negative size is less than the empty file's).
//   - vpc: too large.
//   - vmdk: refused in qimg's words (qemu-img writes an image it cannot
//     open).
//
// A negative size that rounds up to 0 (-o size= 2^64-511 to 2^64-2)
// makes an empty image, as qemu-img's does.

// qemuMaxLength is QEMU's BDRV_MAX_LENGTH: INT64_MAX aligned down to its
// largest request (1 GiB), the most a node can be truncated to.
const qemuMaxLength = math.MaxInt64 &^ (1<<30 - 1)

// hugeSize says whether the engine refuses size (past 2^62, negative).
func hugeSize(size int64) bool { return size < 0 || size > 1<<62 }

// roundSector is size rounded up to whole 512-byte sectors as QEMU's
// ROUND_UP in an int64: from INT64_MAX-510 on it wraps negative.
func roundSector(size int64) int64 { return int64((uint64(size) + 511) &^ 511) }

// qcow2HugeSizeErr is the qcow2 driver's refusal of a huge size.
func qcow2HugeSizeErr(size int64) error {
	switch r := roundSector(size); {
	case r < 0:
		return errors.New("Could not resize image: Image size cannot be negative")
	case r > qemuMaxLength:
		return fmt.Errorf("Could not resize image: offset(%d) exceeds maximum(%d)", r, int64(qemuMaxLength))
	}
	return errQcow2TooLarge
}

// errQcow2TooLarge is qemu-img's words for a qcow2 size past the L1
// table's limit at the cluster size asked for.
var errQcow2TooLarge = errors.New("The image size is too large for file format 'qcow2' (try using a larger cluster size)")

// errRawNegative is QEMU's file driver's refusal to truncate a raw image
// to a negative size.
var errRawNegative = errors.New("Could not resize file: Invalid argument")
