// Package latdev is a block.Device filter that models the latency of slow
// storage, so the engine's I/O patterns can be compared on HDD-like and
// distributed-storage profiles without that hardware: per-op overhead, a
// seek cost growing with the distance from the previous op, bandwidth, a
// cost for allocating never-written space (separately for fallocate-zeroing
// and for data writes), flush cost, and a limit on ops serviced in parallel.
//
// Invariants (code cites them as LD1..LD4; not L1/L2, which are qcow2's
// tables):
//
//	LD1  At most Model.Parallel ops are being serviced (slept and passed to the
//	     child) at once; the rest queue. Parallel 1 is a single-head disk.
//	LD2  The cost of an op is computed when it starts service, from the state
//	     left by ops that started before it: the head position (end of the
//	     previous op) and the set of extents already allocated.
//	LD3  An extent (Model.AllocGranularity bytes) is "new" until a write or
//	     zero touches it; each new extent is charged once, AllocZero if
//	     WriteZeroes touched it first, AllocWrite if a data write did. Reads
//	     never allocate. Shrinking truncate forgets extents past the new end.
//	LD4  The data itself is the child's: latdev only delays, never alters.
//
// Cost of one op (see Model for units):
//
//	PerOp + seek + bytes/Bandwidth + new extents × AllocWrite|AllocZero
//	seek  = 0 if the op starts where the previous one ended, else
//	        min(SeekMin + SeekTime × distance/SeekDistance, SeekMax)
//	flush = PerOp + Flush
//
// WriteZeroes costs no transfer time (it is modelled as fallocate). Tests
// scale a model down with Model.Scaled, or pass Model.Sleep to record costs
// instead of sleeping.
package latdev
