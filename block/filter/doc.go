// Package filter holds block.Device layers that sit over other devices, in
// the manner of QEMU's filter and protocol-less drivers: raw (an
// offset/size window), blkverify (compare a test device with a reference),
// quorum (N-way replication with voting), copy-on-read, mirror (live copy
// to a target) and throttle (token-bucket IOPS/bandwidth limits).
//
// The package depends on block only; it never imports qcow2. A layer that
// needs allocation information (copy-on-read) asks its top device through
// the Allocator interface, which callers adapt (internal/imgopen adapts
// *qcow2.Image via BlockStatus).
//
// Every layer is a block.Device and keeps block's B1..B7 (package block's
// doc.go; blocktest checks them). The invariants of the layers themselves
// (code and tests cite them as FL1..FL8; mirror.go adds MR1..MR3):
//
//	FL1  Flag inheritance: Caps() is computed from the children on every
//	     call (a backend may drop Allocate at run time). A passthrough layer
//	     reports its child's flags; a layer that sends one request to several
//	     children reports only the flags every such child supports
//	     (intersection); Align and MemAlign are the children's maximum.
//	     Media is the child's, or the primary child's (blkverify's test
//	     device, quorum's first child, mirror's source, copy-on-read's
//	     top): what the layer's writes mostly cost; but a layer reports
//	     RAM only when every child that receives its writes is RAM
//	     (else the medium of the first child that is not RAM), since an engine streams
//	     zeros ahead on RAM and every copy would pay for them (an SSD
//	     mirror target in flash wear). Metered is set if
//	     any child that receives writes is metered, or the layer itself
//	     limits writes (throttle). AllocWritten (B9) and MergesWrites
//	     (B10) are set only if every child that receives writes sets
//	     them: an engine that trusts them skips its zero fill or pads
//	     new clusters whole, which only pays when every copy gets it.
//	FL2  A WriteZeroes whose flags are outside Caps() (ZeroFlags for
//	     Allocate/MayUnmap, ReqFlags for Serialising/NoWait), or an Allocate
//	     request not aligned to Caps().Align, fails with
//	     block.ErrNotSupported before any child is called (block's B3:
//	     nothing written).
//	FL3  Layers that fan a write out to several children (blkverify,
//	     quorum, mirror) serialise overlapping requests with a range lock,
//	     so the children apply overlapping writes in the same order and
//	     cannot diverge through reordering alone. Only overlapping
//	     requests wait (block's B1); a Serialising|NoWait request that
//	     would wait on the lock fails with block.ErrBusy instead, having
//	     done nothing (block's B5; copy-on-read's lock too).
//	FL4  A layer owns its children: Close closes them (mirror's target
//	     only until Complete hands it over).
//	FL5  Copy-on-read and mirror never overwrite newer guest data (a
//	     write, zeroing or discard) with older copied data: the copy of a
//	     range holds that range's lock and re-checks its state
//	     (allocation, dirty bit) under it. Copy-on-read's range is the
//	     read rounded out to the top's clusters (ClusterSizer), as QEMU
//	     copies whole clusters: the lock covers the rounding too.
//	FL6  Errors are typed: ErrMismatch (blkverify, with the offset),
//	     ErrQuorum (not enough children agreed or succeeded), ErrCompleted
//	     (mirror after Complete), block.ErrRange (raw writes and
//	     discards past the window), block.ErrNotSupported (FL2, FL8).
//	FL7  Buffer ownership is block's: a layer keeps no reference to the
//	     caller's buffers after a call returns; copies it needs (quorum
//	     votes, blkverify reference reads) are its own.
//	FL8  Discards (block.Discarder; a queued OpDiscard runs them, block's
//	     A2) follow QEMU's driver of each layer. raw, throttle,
//	     copy-on-read and mirror are Discarders and forward them: raw
//	     checks the range against its window as a write (block.ErrRange
//	     past a fixed one) and shifts it by its offset; throttle charges
//	     it as a write of its length; copy-on-read sends it to its top
//	     under its range lock (FL5: a copy in flight cannot put older
//	     source bytes back over it); mirror discards its source and
//	     marks the chunks dirty, so the copier brings the target to what
//	     the source now reads (MR1..MR3). blkverify and quorum are no
//	     Discarders: QEMU's drivers have no pdiscard. Go's method sets
//	     make every *Raw a Discarder whatever its child, so a layer
//	     whose child that must take the discard (raw's, throttle's,
//	     copy-on-read's top, mirror's source) is no Discarder returns
//	     block.ErrNotSupported having done nothing (block's B3); the
//	     mirror's target need not be one.
package filter
