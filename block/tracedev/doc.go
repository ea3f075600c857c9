// Package tracedev is a block.Device filter that logs every operation, for
// golden I/O-order traces of the qcow2 engine (pebble's testdata/checkpoint
// idea): a reordering of metadata writes shows up as a one-line diff.
//
// String renders one op per line:
//
//	write 0x50000+0x1000 data
//	zero 0x40000+0x10000 Allocate
//	flush
//	read 0x0+0x10000
//	truncate 0x100000
//
// With Options.ClusterSize the ranges are printed as clusters: "c5" (one
// whole cluster), "c5-c7" (whole clusters 5 to 7), or "c5+0x200:0x1000"
// (a part of cluster 5: in-cluster offset, then length).
//
// Invariants:
//
//	T1  Ops are recorded in completion order, after the child returns, one
//	    entry per op; a failed op is recorded with its error.
//	T2  ZeroThenWritev is recorded as a zero entry then a write entry, both
//	    when the child returns.
//	T3  Writes are classified "zeros" if every byte is zero, else "data".
//	T4  Size, Caps and Close are not recorded.
package tracedev
